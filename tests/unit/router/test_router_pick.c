/* router_pick: which reader takes a request. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fewest_outstanding_among_healthy),
        cmocka_unit_test(ties_rotate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
