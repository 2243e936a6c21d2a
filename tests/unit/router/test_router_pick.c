/* router_pick: which reader takes a request; router_refusal: which answers may go again. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "meridian/router.h"

static void fewest_outstanding_among_healthy(void **state)
{
    (void)state;
    router_backend_view b[4] = {
        {.up = true, .eligible = false, .outstanding = 0}, /* the writer: not a member */
        {.up = true, .eligible = true, .outstanding = 3},
        {.up = true, .eligible = true, .outstanding = 1},
        {.up = false, .eligible = true, .outstanding = 0}, /* down */
    };
    assert_int_equal(router_pick(b, 4, 0, 1000, 0), 2);
    /* Lagging beyond the limit: skipped. */
    b[2].lag_ms = 5000;
    assert_int_equal(router_pick(b, 4, 0, 1000, 0), 1);
    /* Already tried: skipped; nothing left: -1. */
    assert_int_equal(router_pick(b, 4, 1u << 1, 1000, 0), -1);
    b[2].lag_ms = 0;
    assert_int_equal(router_pick(b, 4, 1u << 2, 1000, 0), 1);
    assert_int_equal(router_pick(b, 0, 0, 1000, 0), -1);
}

static void ties_rotate(void **state)
{
    (void)state;
    router_backend_view b[3] = {{.up = true, .eligible = true},
                                {.up = true, .eligible = true},
                                {.up = true, .eligible = true}};
    int seen[3] = {0, 0, 0}, last = 0;
    for (int i = 0; i < 30; i++) {
        last = router_pick(b, 3, 0, 1000, last);
        seen[last]++;
    }
    assert_int_equal(seen[0], 10);
    assert_int_equal(seen[1], 10);
    assert_int_equal(seen[2], 10);
    /* An out-of-range position is treated as "start at the beginning". */
    assert_int_equal(router_pick(b, 3, 0, 1000, 99), 0);
}

static bool refusal(int status, const char *body, bool to_writer, bool region_primary,
                    char *code)
{
    return router_refusal(status, (const uint8_t *)body, strlen(body), to_writer, region_primary,
                          code, 32);
}

#define ERR(c, m) "{\"error\":{\"code\":\"" c "\",\"message\":\"" m "\"}}"

static void refusals(void **state)
{
    (void)state;
    char code[32];
    /* said before anything ran: goes again */
    assert_true(refusal(503, ERR("draining", "switchover"), true, true, code));
    assert_string_equal(code, "draining");
    assert_true(refusal(503, ERR("fenced", "epoch 3"), true, true, code));
    assert_true(refusal(503, ERR("busy", "queue full"), true, true, code));
    assert_true(refusal(503, ERR("unavailable", "the writer is still recovering the volume"),
                        true, true, code));
    assert_true(refusal(503, ERR("unavailable", "the instance is starting: it waits"), true,
                        true, code));
    assert_true(refusal(503, ERR("unavailable", "cannot begin a transaction: disk I/O"), true,
                        true, code));
    /* a writer's outcome unknown: the answer */
    assert_false(refusal(503, ERR("unavailable", "commit failed: disk I/O error"), true, true,
                         code));
    assert_string_equal(code, "unavailable");
    assert_false(refusal(503, ERR("unavailable", "the volume cannot make commits durable"),
                         true, true, code));
    /* a reader's 503 unavailable: it only reads, any of them may go again */
    assert_true(refusal(503,
                        ERR("unavailable", "page 7 at lsn 9: the log stream started over; "
                                           "send it again"),
                        false, true, code));
    assert_true(refusal(503, ERR("unavailable", "commit failed: impossible on a reader"), false,
                        false, code));
    /* a secondary's writer standing by: a refusal only while its region is taken for primary */
    assert_true(refusal(503, ERR("secondary_region", "r2 is a secondary"), true, true, code));
    assert_false(refusal(503, ERR("secondary_region", "r2 is a secondary"), true, false, code));
    /* a write that reached a reader: a refusal only when it was meant for a writer */
    assert_true(refusal(403, ERR("read_only", "a reader"), true, true, code));
    assert_false(refusal(403, ERR("read_only", "a reader"), false, true, code));
    /* anything else, or no readable error: the answer */
    assert_false(refusal(503, ERR("lagging", "behind"), false, true, code));
    assert_string_equal(code, "lagging");
    assert_false(refusal(400, ERR("sql_error", "no such table"), false, true, code));
    assert_false(refusal(503, "not json", false, true, code));
    assert_string_equal(code, "");
    assert_false(refusal(503, "{\"error\":{\"code\":5}}", false, true, code));
    assert_false(router_refusal(503, NULL, 0, false, true, code, sizeof(code)));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fewest_outstanding_among_healthy),
        cmocka_unit_test(ties_rotate),
        cmocka_unit_test(refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
