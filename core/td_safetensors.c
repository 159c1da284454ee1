/* placeholder until the reader lands */
#include "config.h"
#include "td_safetensors.h"
