/* mhd_ceiling: the least an HTTP server on libmicrohttpd can do, to measure
 * tinyd's HTTP layer against (bench/http_health.sh).
 *
 * It answers GET /v2/health/ready with 200 {"ready":true} from one MHD epoll
 * thread, the same single-threaded epoll mode tinyd drives from its libuv
 * loop, and 404 for anything else. No routing table, no JSON library, no
 * metrics, no loop integration: whatever tinyd's figures lose against these
 * is the cost of tinyd's own work per request.
 *
 * Usage: mhd_ceiling [PORT]   (loopback only; 0 or absent: the kernel picks)
 * Prints "port N" on stdout once listening, runs until SIGINT or SIGTERM. */
#include "config.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char ready_body[] = "{\"ready\":true}";
static const char missing_body[] = "{\"error\":\"no such path\"}";

struct ceiling {
    struct MHD_Response *ready;
    struct MHD_Response *missing;
};

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn,
                              const char *url, const char *method,
                              const char *version, const char *upload_data,
                              size_t *upload_data_size, void **req_cls)
{
    static int seen_headers;
    struct ceiling *c = cls;
    (void)version; (void)upload_data;
    /* Answer on the second call, once the (empty) body is in: MHD 0.9.75
     * closes the connection after a response queued on the first call,
     * since it cannot know where the next request would start. */
    if (*req_cls == NULL) {
        *req_cls = &seen_headers;
        return MHD_YES;
    }
    if (*upload_data_size != 0) { /* a body nobody asked for: skip it */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strcmp(method, "GET") == 0 && strcmp(url, "/v2/health/ready") == 0)
        return MHD_queue_response(conn, MHD_HTTP_OK, c->ready);
    return MHD_queue_response(conn, MHD_HTTP_NOT_FOUND, c->missing);
}

static struct MHD_Response *json_response(const char *body)
{
    /* Persistent: the static body is shared by every request. */
    struct MHD_Response *r = MHD_create_response_from_buffer(
        strlen(body), (void *)body, MHD_RESPMEM_PERSISTENT);
    if (r != NULL &&
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                "application/json") != MHD_YES) {
        MHD_destroy_response(r);
        return NULL;
    }
    return r;
}

int main(int argc, char **argv)
{
    unsigned long port = 0;
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "--help") == 0)) {
        fprintf(stderr, "usage: %s [PORT]\n", argv[0]);
        return 2;
    }
    if (argc == 2) {
        char *end;
        port = strtoul(argv[1], &end, 10);
        if (*argv[1] == '\0' || *end != '\0' || port > 65535) {
            fprintf(stderr, "mhd_ceiling: bad port '%s'\n", argv[1]);
            return 2;
        }
    }

    /* Block the stop signals before MHD starts its thread, so that thread
     * inherits the mask and sigwait below is the only receiver. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    if (pthread_sigmask(SIG_BLOCK, &stop, NULL) != 0) {
        fprintf(stderr, "mhd_ceiling: cannot block signals\n");
        return 1;
    }

    struct ceiling c = { json_response(ready_body), json_response(missing_body) };
    if (c.ready == NULL || c.missing == NULL) {
        fprintf(stderr, "mhd_ceiling: cannot create responses\n");
        return 1;
    }

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);

    struct MHD_Daemon *d = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG, (uint16_t)port,
        NULL, NULL, answer, &c,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_LIMIT, 4096u,
        MHD_OPTION_CONNECTION_TIMEOUT, 30u,
        MHD_OPTION_END);
    if (d == NULL) {
        fprintf(stderr, "mhd_ceiling: cannot listen on 127.0.0.1:%lu\n", port);
        return 1;
    }
    const union MHD_DaemonInfo *info =
        MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    printf("port %u\n", info != NULL ? (unsigned)info->port : 0u);
    fflush(stdout);

    int sig;
    while (sigwait(&stop, &sig) != 0)
        ;
    MHD_stop_daemon(d);
    MHD_destroy_response(c.ready);
    MHD_destroy_response(c.missing);
    return 0;
}
