"""miniyaml: the small YAML subset docs/openapi.yaml is written in.

The test machine need not have PyYAML, so the spec keeps to a subset this
loader reads, and test_openapi.py checks (where PyYAML exists) that both
loaders agree, so the file stays real YAML too. The subset:

  - block mappings `key: value` / `key:` with the value indented below;
    keys plain or quoted ('single' or "double");
  - block sequences `- item`, indented under their key, items scalars or
    mappings (`- key: value` continues at the item's indentation);
  - scalars: "double" (JSON escapes), 'single' ('' is a quote), plain
    (true, false, null, integers, decimals, else the text);
  - flow collections on one line: [a, "b", 3], {} and [];
  - comments: `#` at a line's start or after a blank, outside quotes.

Anything else (anchors, tags, block scalars `|`, multi-line flow,
documents) is an error naming the line.
"""

import json
import re

_INT = re.compile(r"^[-+]?(0|[1-9][0-9]*)$")
_FLOAT = re.compile(r"^[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$")


class YamlError(ValueError):
    pass


def _strip_comment(line):
    q = None
    for i, ch in enumerate(line):
        if q:
            if ch == q:
                q = None
        elif ch in "\"'" and (i == 0 or line[i - 1] in " [{,:-"):
            q = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_key(text, lineno):
    """'key: rest' -> (key, rest) or None when text is not a mapping entry."""
    if text[:1] in "\"'":
        q = text[0]
        i = 1
        while i < len(text):
            if text[i] == q:
                if q == "'" and text[i + 1:i + 2] == "'":
                    i += 2
                    continue
                break
            if q == '"' and text[i] == "\\":
                i += 1
            i += 1
        if i >= len(text):
            raise YamlError("line %d: unterminated quote" % lineno)
        rest = text[i + 1:]
        if rest == ":" or rest.startswith(": "):
            return _scalar(text[:i + 1], lineno), rest[1:].strip()
        return None
    m = re.match(r"^([^\s:#\[\]{},&*!|>'\"%@`-][^:#]*?|-[^\s:#][^:#]*?)"
                 r":( +(.*))?$", text)
    if not m:
        return None
    return m.group(1), (m.group(3) or "").strip()


def _scalar(text, lineno):
    t = text.strip()
    if t == "":
        return None
    if t[0] == '"':
        try:
            return json.loads(t)
        except ValueError:
            raise YamlError("line %d: bad double-quoted string %s"
                            % (lineno, t)) from None
    if t[0] == "'":
        if len(t) < 2 or t[-1] != "'":
            raise YamlError("line %d: bad single-quoted string" % lineno)
        return t[1:-1].replace("''", "'")
    if t[0] == "[":
        if t[-1] != "]":
            raise YamlError("line %d: a flow sequence must end on its line"
                            % lineno)
        inner = t[1:-1].strip()
        return [_scalar(x, lineno) for x in _split_flow(inner, lineno)] \
            if inner else []
    if t[0] == "{":
        if t != "{}":
            raise YamlError("line %d: only the empty flow mapping {} is "
                            "supported" % lineno)
        return {}
    if t[0] in "&*!|>%@`":
        raise YamlError("line %d: %r is outside the supported subset"
                        % (lineno, t[0]))
    if t in ("true", "True", "TRUE"):
        return True
    if t in ("false", "False", "FALSE"):
        return False
    if t in ("null", "Null", "NULL", "~"):
        return None
    if _INT.match(t):
        return int(t)
    if _FLOAT.match(t):
        return float(t)
    return t


def _split_flow(inner, lineno):
    items, cur, q = [], "", None
    for ch in inner:
        if q:
            cur += ch
            if ch == q:
                q = None
        elif ch in "\"'":
            q = ch
            cur += ch
        elif ch in "[]{}":
            raise YamlError("line %d: nested flow collections are not "
                            "supported" % lineno)
        elif ch == ",":
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    return [x.strip() for x in items]


def load(text):
    """Parse text -> Python dicts, lists and scalars."""
    lines = []
    for n, raw in enumerate(text.splitlines(), 1):
        if "\t" in raw[:len(raw) - len(raw.lstrip())]:
            raise YamlError("line %d: tab in indentation" % n)
        s = _strip_comment(raw)
        if s.strip() in ("---", "..."):
            raise YamlError("line %d: one document only" % n)
        if s.strip():
            lines.append((n, len(s) - len(s.lstrip(" ")), s.strip()))
    if not lines:
        return None
    value, pos = _block(lines, 0, lines[0][1])
    if pos != len(lines):
        raise YamlError("line %d: unexpected indentation" % lines[pos][0])
    return value


def _block(lines, pos, indent):
    """The node whose lines start at pos with this indentation."""
    n, ind, text = lines[pos]
    if text == "-" or text.startswith("- "):
        return _sequence(lines, pos, indent)
    if _split_key(text, n) is not None:
        return _mapping(lines, pos, indent)
    if pos + 1 < len(lines) and lines[pos + 1][1] >= indent:
        raise YamlError("line %d: multi-line plain scalars are not "
                        "supported" % n)
    return _scalar(text, n), pos + 1


def _value_after(lines, pos, parent_indent, rest, n):
    """The value of `key: rest` / `- rest` whose line is lines[pos-1]."""
    if rest != "":
        return _scalar(rest, n), pos
    if pos < len(lines) and lines[pos][1] > parent_indent:
        return _block(lines, pos, lines[pos][1])
    return None, pos


def _mapping(lines, pos, indent, first=None):
    out = {}
    while pos < len(lines):
        n, ind, text = lines[pos]
        if first is not None:
            text, first = first, None
        elif ind < indent:
            break
        elif ind > indent:
            raise YamlError("line %d: unexpected indentation" % n)
        kv = _split_key(text, n)
        if kv is None:
            raise YamlError("line %d: expected `key: value`, got %r"
                            % (n, text))
        key, rest = kv
        if key in out:
            raise YamlError("line %d: duplicate key %r" % (n, key))
        out[key], pos = _value_after(lines, pos + 1, indent, rest, n)
    return out, pos


def _sequence(lines, pos, indent):
    out = []
    while pos < len(lines):
        n, ind, text = lines[pos]
        if ind < indent:
            break
        if ind > indent:
            raise YamlError("line %d: unexpected indentation" % n)
        if not (text == "-" or text.startswith("- ")):
            break
        rest = text[1:].strip()
        item_indent = ind + 1 + (len(text) - 1 - len(text[1:].lstrip()))
        if rest and not rest.startswith(("[", "{", '"', "'")) and \
                _split_key(rest, n) is not None:
            item, pos = _mapping(lines, pos, item_indent, first=rest)
        elif rest and rest[0] in "\"'" and _split_key(rest, n) is not None:
            item, pos = _mapping(lines, pos, item_indent, first=rest)
        else:
            item, pos = _value_after(lines, pos + 1, indent, rest, n)
        out.append(item)
    return out, pos
