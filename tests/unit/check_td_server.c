/* Unit tests for the daemon's pure modules: router, OIP parsing and
 * responses, labels, metrics rendering, the string builder, and
 * repository file names. (The event loop is tested end to end by the
 * integration tests against the real daemon.) */
#include "config.h"

#include <check.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "td_buf.h"
#include "td_labels.h"
#include "td_metrics.h"
#include "td_oip.h"
#include "td_registry.h"
#include "td_router.h"

/* ------------------------------------------------------------ router */

START_TEST(test_router_routes_and_captures)
{
    td_match m;
    ck_assert_int_eq(td_route("GET", "/v2", &m), 200);
    ck_assert_int_eq(m.route, TD_ROUTE_SERVER_META);
    ck_assert_int_eq(td_route("GET", "/v2/health/ready", &m), 200);
    ck_assert_int_eq(m.route, TD_ROUTE_HEALTH_READY);
    ck_assert_int_eq(td_route("HEAD", "/v2/health/live", &m), 200);
    ck_assert_int_eq(td_route("GET", "/v2/models/", &m), 200);
    ck_assert_int_eq(m.route, TD_ROUTE_MODELS);
    ck_assert_int_eq(td_route("GET", "/v2/models/tiny-e.1", &m), 200);
    ck_assert_int_eq(m.route, TD_ROUTE_MODEL_META);
    ck_assert_str_eq(m.name, "tiny-e.1");
    ck_assert_str_eq(m.version, "");
    ck_assert_int_eq(td_route("POST", "/v2/models/a/versions/7/infer", &m),
                     200);
    ck_assert_int_eq(m.route, TD_ROUTE_MODEL_INFER);
    ck_assert_str_eq(m.name, "a");
    ck_assert_str_eq(m.version, "7");
    ck_assert_int_eq(td_route("GET", "/v2/models/a/versions/1/ready", &m),
                     200);
    ck_assert_int_eq(m.route, TD_ROUTE_MODEL_READY);
}
END_TEST

START_TEST(test_router_404_and_405)
{
    td_match m;
    char allow[64];
    ck_assert_int_eq(td_route("GET", "/nope", &m), 404);
    ck_assert_int_eq(td_route("GET", "/v2/models/a/infer/x", &m), 404);
    ck_assert_int_eq(td_route("GET", "/v2//models", &m), 404);
    ck_assert_int_eq(td_route("GET", "/v2/models/a/infer", &m), 405);
    ck_assert_uint_eq(m.allowed, TD_METHOD_POST);
    td_methods_str(m.allowed, allow, sizeof allow);
    ck_assert_str_eq(allow, "POST");
    ck_assert_int_eq(td_route("DELETE", "/v2/health/ready", &m), 405);
    td_methods_str(m.allowed, allow, sizeof allow);
    ck_assert_str_eq(allow, "GET, HEAD");
}
END_TEST

START_TEST(test_router_rejects_overlong_name)
{
    td_match m;
    char path[400];
    memset(path, 'a', sizeof path);
    memcpy(path, "/v2/models/", 11);
    path[sizeof path - 1] = '\0';
    ck_assert_int_eq(td_route("GET", path, &m), 404);
}
END_TEST

/* ------------------------------------------------------------ OIP */

static const td_tensor_spec in_spec[1] = {
    {"input", TD_DT_F32, 2, {-1, 3}},
};
static const td_tensor_spec out_spec[1] = {
    {"logits", TD_DT_F32, 2, {-1, 2}},
};

static td_status parse(const char *json, td_oip_request *req, td_error *err)
{
    return td_oip_parse(json, strlen(json), strlen(json), in_spec, 1,
                        out_spec, 1, NULL, req, err);
}

START_TEST(test_oip_parse_nested_and_flat)
{
    td_oip_request req;
    td_error err;
    const float *x;
    ck_assert_int_eq(
        parse("{\"id\":\"r1\",\"inputs\":[{\"name\":\"input\",\"shape\":[2,3],"
              "\"datatype\":\"FP32\",\"data\":[[1,2,3],[4,5,6.5]]}]}",
              &req, &err),
        TD_OK);
    ck_assert_str_eq(req.id, "r1");
    ck_assert_int_eq(req.n_inputs, 1);
    ck_assert_int_eq(req.inputs[0].shape[0], 2);
    x = req.inputs[0].data;
    ck_assert_float_eq(x[0], 1.0f);
    ck_assert_float_eq(x[5], 6.5f);
    td_oip_request_free(&req);
    ck_assert_int_eq(parse("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                           "\"datatype\":\"FP32\",\"data\":[7,8,9]}]}",
                           &req, &err),
                     TD_OK);
    ck_assert_float_eq(((float *)req.inputs[0].data)[2], 9.0f);
    td_oip_request_free(&req);
}
END_TEST

/* Each bad request gives TD_EINVAL (or EFORMAT) and a message with the
 * given fragment. */
static void expect_error(const char *json, const char *fragment)
{
    td_oip_request req;
    td_error err;
    td_status st = parse(json, &req, &err);
    ck_assert_msg(st != TD_OK, "accepted: %s", json);
    ck_assert_msg(strstr(err.msg, fragment) != NULL,
                  "message \"%s\" lacks \"%s\"", err.msg, fragment);
    td_oip_request_free(&req);
}

START_TEST(test_oip_parse_errors_name_the_problem)
{
    expect_error("{\"inputs\":[", "malformed JSON at line 1");
    expect_error("[]", "must be a JSON object");
    expect_error("{}", "no \"inputs\" array");
    expect_error("{\"inputs\":[]}", "\"inputs\" is empty");
    expect_error("{\"inputs\":[{\"name\":\"x\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]}]}",
                 "unknown input \"x\"");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP64\",\"data\":[1,2,3]}]}",
                 "datatype FP64, expected FP32");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP99\",\"data\":[1,2,3]}]}",
                 "unknown datatype \"FP99\"");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,4],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}",
                 "dimension 1 must be 3");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]}]}",
                 "shape has 1 dimensions, expected 2");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[2,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]}]}",
                 "holds 6 values, data has 3");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3,4]}]}",
                 "holds 3 values, data has 4");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,\"a\",3]}]}",
                 "data[1] is not a valid FP32");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[-1,3],"
                 "\"datatype\":\"FP32\",\"data\":[]}]}",
                 "shape[0] must be a non-negative integer");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]},{\"name\":\"input\","
                 "\"shape\":[1,3],\"datatype\":\"FP32\",\"data\":[1,2,3]}]}",
                 "given twice");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]}],\"outputs\":[{"
                 "\"name\":\"probs\"}]}",
                 "unknown output \"probs\"");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                 "\"datatype\":\"FP32\",\"data\":[1,2,3]}],\"outputs\":[{"
                 "\"name\":\"logits\",\"parameters\":{\"classification\":0}}]}",
                 "must be a positive integer");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[4000000000000,"
                 "3],\"datatype\":\"FP32\",\"data\":[]}]}",
                 "too many values");
    expect_error("{\"inputs\":[{\"name\":\"input\",\"shape\":[1000,3],"
                 "\"datatype\":\"FP32\",\"data\":[[[[[[[[[[1]]]]]]]]]]}]}",
                 "holds 3000 values");
}
END_TEST

START_TEST(test_oip_parse_binary_extension)
{
    const char *json = "{\"inputs\":[{\"name\":\"input\",\"shape\":[1,3],"
                       "\"datatype\":\"FP32\",\"parameters\":{"
                       "\"binary_data_size\":12}}]}";
    float vals[3] = {1.5f, NAN, -2.0f};
    size_t jl = strlen(json);
    char body[256];
    td_oip_request req;
    td_error err;
    const float *x;
    memcpy(body, json, jl);
    memcpy(body + jl, vals, sizeof vals);
    ck_assert_int_eq(td_oip_parse(body, jl + 12, jl, in_spec, 1, out_spec, 1,
                                  NULL, &req, &err),
                     TD_OK);
    x = req.inputs[0].data;
    ck_assert_float_eq(x[0], 1.5f);
    ck_assert(isnan(x[1]));
    td_oip_request_free(&req);
    /* Truncated: 8 of 12 bytes. */
    ck_assert_int_eq(td_oip_parse(body, jl + 8, jl, in_spec, 1, out_spec, 1,
                                  NULL, &req, &err),
                     TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "truncated"));
    td_oip_request_free(&req);
    /* Leftover bytes belong to no input. */
    memcpy(body + jl + 12, "xyz", 3);
    ck_assert_int_eq(td_oip_parse(body, jl + 15, jl, in_spec, 1, out_spec, 1,
                                  NULL, &req, &err),
                     TD_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "belong to no input"));
    td_oip_request_free(&req);
    /* Header length past the body. */
    ck_assert_int_eq(td_oip_parse(body, 10, 20, in_spec, 1, out_spec, 1, NULL,
                                  &req, &err),
                     TD_EINVAL);
    td_oip_request_free(&req);
}
END_TEST

START_TEST(test_oip_limits)
{
    td_oip_request req;
    td_error err;
    td_oip_limits lim = {1000, 2};
    const char *json = "{\"inputs\":[{\"name\":\"input\",\"shape\":[3,3],"
                       "\"datatype\":\"FP32\",\"data\":[1,2,3,4,5,6,7,8,9]}]}";
    ck_assert_int_eq(td_oip_parse(json, strlen(json), strlen(json), in_spec,
                                  1, out_spec, 1, &lim, &req, &err),
                     TD_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "batch of 3 exceeds"));
    td_oip_request_free(&req);
}
END_TEST

START_TEST(test_oip_response_values_and_classification)
{
    float logits[4] = {0.25f, 2.0f, NAN, -1.0f};
    td_tensor out;
    td_oip_request req;
    const char *labels[2] = {"cat", "dog"};
    char *body;
    size_t len;
    td_error err;
    memset(&out, 0, sizeof out);
    strcpy(out.name, "logits");
    out.dtype = TD_DT_F32;
    out.ndim = 2;
    out.shape[0] = 2;
    out.shape[1] = 2;
    out.data = logits;
    memset(&req, 0, sizeof req);
    req.id = strdup("q");
    ck_assert_int_eq(td_oip_response("m", &req, &out, 1, labels, 2, &body,
                                     &len, &err),
                     TD_OK);
    ck_assert_str_eq(body,
                     "{\"model_name\":\"m\",\"model_version\":\"1\",\"id\":"
                     "\"q\",\"outputs\":[{\"name\":\"logits\",\"datatype\":"
                     "\"FP32\",\"shape\":[2,2],\"data\":[0.25,2.0,null,-1.0]"
                     "}]}");
    free(body);
    req.n_outputs = 1;
    strcpy(req.outputs[0].name, "logits");
    req.outputs[0].classification = 1;
    ck_assert_int_eq(td_oip_response("m", &req, &out, 1, labels, 2, &body,
                                     &len, &err),
                     TD_OK);
    /* Row 0: dog wins; row 1: NaN sorts last, so dog (-1) wins. */
    ck_assert_ptr_nonnull(strstr(body, "\"datatype\":\"BYTES\",\"shape\":[2,1]"
                                       ",\"data\":[\"2:1:dog\",\"-1:1:dog\"]"));
    free(body);
    td_oip_request_free(&req);
}
END_TEST

/* ------------------------------------------------------------ labels */

START_TEST(test_labels_parse)
{
    td_labels l;
    td_error err;
    ck_assert_int_eq(td_labels_parse(&l, "[\"a\",\"b\"]", 2, &err), TD_OK);
    ck_assert_int_eq(l.n, 2);
    ck_assert_str_eq(l.names[1], "b");
    td_labels_free(&l);
    ck_assert_int_eq(td_labels_parse(&l, NULL, 3, &err), TD_OK);
    ck_assert_int_eq(l.n, 0);
    ck_assert_int_eq(td_labels_parse(&l, "[\"a\"]", 2, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "expected 2"));
    ck_assert_int_eq(td_labels_parse(&l, "[\"a\",3]", 2, &err), TD_EFORMAT);
    ck_assert_ptr_nonnull(strstr(err.msg, "[1] is not a string"));
    ck_assert_int_eq(td_labels_parse(&l, "{", 0, &err), TD_EFORMAT);
}
END_TEST

/* ------------------------------------------------------------ metrics */

START_TEST(test_metrics_histogram_is_cumulative)
{
    td_metrics m;
    td_buf b;
    char *text;
    size_t len;
    memset(&m, 0, sizeof m);
    td_metrics_observe(&m, TD_ROUTE_HEALTH_READY, 200, 0.0002);
    td_metrics_observe(&m, TD_ROUTE_HEALTH_READY, 200, 0.003);
    td_metrics_observe(&m, TD_ROUTE_HEALTH_READY, 503, 100.0);
    td_buf_init(&b);
    td_metrics_render_http(&m, &b);
    text = td_buf_take(&b, &len);
    ck_assert_ptr_nonnull(strstr(
        text, "tinyd_http_requests_total{route=\"health_ready\",code=\"200\"}"
              " 2\n"));
    ck_assert_ptr_nonnull(strstr(
        text, "tinyd_http_requests_total{route=\"health_ready\",code=\"503\"}"
              " 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "{route=\"health_ready\",le=\"0.00025\"}"
                                       " 1\n"));
    ck_assert_ptr_nonnull(strstr(text, "{route=\"health_ready\",le=\"0.005\"}"
                                       " 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "{route=\"health_ready\",le=\"5\"} 2\n"));
    ck_assert_ptr_nonnull(strstr(text, "{route=\"health_ready\",le=\"+Inf\"} "
                                       "3\n"));
    ck_assert_ptr_nonnull(strstr(
        text, "tinyd_http_request_duration_seconds_count{route="
              "\"health_ready\"} 3\n"));
    free(text);
}
END_TEST

START_TEST(test_metrics_label_escaping_and_buf)
{
    td_buf b;
    char *text, big[1000];
    size_t len;
    td_buf_init(&b);
    td_metrics_label(&b, "a\"b\\c\nd");
    text = td_buf_take(&b, &len);
    ck_assert_str_eq(text, "a\\\"b\\\\c\\nd");
    free(text);
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    td_buf_init(&b);
    td_buf_printf(&b, "%s|%d", big, 42);
    text = td_buf_take(&b, &len);
    ck_assert_uint_eq(len, sizeof big - 1 + 3);
    ck_assert_str_eq(text + len - 3, "|42");
    free(text);
    td_buf_init(&b);
    text = td_buf_take(&b, &len);
    ck_assert_str_eq(text, "");
    free(text);
}
END_TEST

/* ------------------------------------------------------------ names */

START_TEST(test_repository_file_names)
{
    char name[TD_NAME_MAX + 1];
    ck_assert(td_registry_servable_name("tiny-e.safetensors", name,
                                        sizeof name));
    ck_assert_str_eq(name, "tiny-e");
    ck_assert(td_registry_servable_name("a.b_c.safetensors", name,
                                        sizeof name));
    ck_assert(!td_registry_servable_name(".hidden.safetensors", name,
                                         sizeof name));
    ck_assert(!td_registry_servable_name(".m.safetensors.tmp.Ab12", name,
                                         sizeof name));
    ck_assert(!td_registry_servable_name("m.json", name, sizeof name));
    ck_assert(!td_registry_servable_name(".safetensors", name, sizeof name));
    ck_assert(!td_registry_servable_name("sp ace.safetensors", name,
                                         sizeof name));
}
END_TEST

static Suite *server_suite(void)
{
    Suite *s = suite_create("server");
    TCase *tc = tcase_create("router");
    tcase_add_test(tc, test_router_routes_and_captures);
    tcase_add_test(tc, test_router_404_and_405);
    tcase_add_test(tc, test_router_rejects_overlong_name);
    suite_add_tcase(s, tc);
    tc = tcase_create("oip");
    tcase_add_test(tc, test_oip_parse_nested_and_flat);
    tcase_add_test(tc, test_oip_parse_errors_name_the_problem);
    tcase_add_test(tc, test_oip_parse_binary_extension);
    tcase_add_test(tc, test_oip_limits);
    tcase_add_test(tc, test_oip_response_values_and_classification);
    suite_add_tcase(s, tc);
    tc = tcase_create("support");
    tcase_add_test(tc, test_labels_parse);
    tcase_add_test(tc, test_metrics_histogram_is_cumulative);
    tcase_add_test(tc, test_metrics_label_escaping_and_buf);
    tcase_add_test(tc, test_repository_file_names);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(server_suite());
    int failed;
    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
