/* The JSON reader: what it accepts, what it builds, and every refusal with its place. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "meridian/json.h"

static void parse_ok(const char *text, mrd_json_doc *doc)
{
    mrd_msg msg = {{0}};
    int rc = mrd_json_parse(text, strlen(text), doc, &msg);
    if (rc != 0) fail_msg("%s: %s", text, msg.text);
}

static void refused(const char *text, size_t len, const char *want)
{
    mrd_json_doc doc;
    mrd_msg msg = {{0}};
    int rc = mrd_json_parse(text, len, &doc, &msg);
    if (rc == 0) fail_msg("accepted: %.*s", (int)len, text);
    if (strstr(msg.text, want) == NULL) fail_msg("%.*s: got \"%s\", want \"%s\"", (int)len, text, msg.text, want);
    assert_null(mrd_json_root(&doc));
}

static void request_shape(void **state)
{
    (void)state;
    mrd_json_doc d;
    parse_ok(" {\"sql\": \"SELECT ?\", \"params\": [1, -2.5, \"x\\u00e9\\ud83d\\ude00\", null, true],"
             " \"after_lsn\": 18446744073709551615, \"n\": 9007199254740993}\n", &d);
    const mrd_json *root = mrd_json_root(&d);
    assert_int_equal(root->kind, MRD_JSON_OBJECT);
    assert_int_equal(root->count, 4);
    assert_string_equal(mrd_json_str(&d, mrd_json_get(&d, root, "sql")), "SELECT ?");
    const mrd_json *params = mrd_json_get(&d, root, "params");
    assert_int_equal(params->kind, MRD_JSON_ARRAY);
    assert_int_equal(params->count, 5);
    const mrd_json *p = mrd_json_first(&d, params);
    assert_true(p->is_int);
    assert_int_equal(p->i, 1);
    p = mrd_json_next(&d, p);
    assert_false(p->is_int);
    assert_true(p->num == -2.5);
    p = mrd_json_next(&d, p);
    assert_string_equal(mrd_json_str(&d, p), "x\xc3\xa9\xf0\x9f\x98\x80");
    p = mrd_json_next(&d, p);
    assert_int_equal(p->kind, MRD_JSON_NULL);
    p = mrd_json_next(&d, p);
    assert_true(p->kind == MRD_JSON_BOOL && p->boolean);
    assert_null(mrd_json_next(&d, p));
    uint64_t v;
    assert_true(mrd_json_get_u64(&d, root, "n", &v));
    assert_int_equal(v, 9007199254740993ull); /* exact: kept as an integer */
    assert_true(mrd_json_get_u64(&d, root, "after_lsn", &v));
    assert_true(v == UINT64_MAX);
    assert_false(mrd_json_get_u64(&d, root, "sql", &v));
    assert_false(mrd_json_get_u64(&d, root, "missing", &v));
    assert_null(mrd_json_get(&d, params, "sql"));
    mrd_json_free(&d);

    parse_ok("\"a\\u0000b\"", &d);
    assert_int_equal(mrd_json_root(&d)->str_len, 3);
    mrd_json_free(&d);
    parse_ok("[[], {}, 0, -0, 1e3, 0.5E-2]", &d);
    assert_int_equal(mrd_json_root(&d)->count, 6);
    mrd_json_free(&d);
}

static void refusals_name_the_place(void **state)
{
    (void)state;
    refused("", 0, "line 1 column 1: unexpected end of text");
    refused("{\"a\":1,}", 8, "line 1 column 8: expected a member name");
    refused("[1,2,]", 6, "unexpected character ']'");
    refused("{\"a\":1,\n \"a\":2}", 15, "line 2 column 2: duplicate key \"a\"");
    refused("{\"a\" 1}", 7, "expected ':'");
    refused("[1 2]", 5, "expected ',' or ']'");
    refused("01", 2, "leading zero");
    refused("1.", 2, "no digit after '.'");
    refused("1e", 2, "no digit in the exponent");
    refused("1e999", 5, "out of range");
    refused("-", 1, "bad number");
    refused("tru", 3, "unexpected character 't'");
    refused("nul", 3, "unexpected character 'n'");
    refused("{} x", 4, "column 4: text after the value");
    refused("\"abc", 4, "string not terminated");
    refused("\"a\tb\"", 5, "control character 0x09");
    refused("\"\\x\"", 4, "bad escape");
    refused("\"\\u12zz\"", 8, "bad hex digit");
    refused("\"\\u12\"", 6, "ends inside a \\u escape");
    refused("\"\\ud800\"", 8, "without its low half");
    refused("\"\\udc00\"", 8, "lone low surrogate");
    refused("\"\\ud800\\u0041\"", 14, "followed by");
    refused("\"\xff\"", 3, "invalid UTF-8");
    refused("\"\xc0\xaf\"", 4, "invalid UTF-8");       /* overlong */
    refused("\"\xed\xa0\x80\"", 5, "invalid UTF-8");   /* encoded surrogate */
    refused("\"\xf4\x90\x80\x80\"", 6, "invalid UTF-8"); /* above U+10FFFF */
    refused("\"ab\0\"", 5, "control character 0x00");
    char deep[200];
    memset(deep, '[', sizeof(deep));
    refused(deep, sizeof(deep), "nested deeper than 64 levels");
}

static void large_inputs_bounded(void **state)
{
    (void)state;
    /* Many members: the duplicate check stays within its limit. */
    char *big = malloc(5000 * 16 + 16);
    size_t n = 0;
    big[n++] = '{';
    for (int i = 0; i < 4097; i++)
        n += (size_t)sprintf(big + n, "%s\"k%d\":%d", i ? "," : "", i, i);
    big[n++] = '}';
    refused(big, n, "more than 4096 members");
    /* A long array is fine. */
    n = 0;
    big[n++] = '[';
    for (int i = 0; i < 10000; i++)
        n += (size_t)sprintf(big + n, "%s%d", i ? "," : "", i % 10);
    big[n++] = ']';
    mrd_json_doc d;
    mrd_msg msg = {{0}};
    assert_int_equal(mrd_json_parse(big, n, &d, &msg), 0);
    assert_int_equal(mrd_json_root(&d)->count, 10000);
    mrd_json_free(&d);
    free(big);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_shape),
        cmocka_unit_test(refusals_name_the_place),
        cmocka_unit_test(large_inputs_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
