/* Choosing a reader for a request: the I/O-free part of the router. */
#include "meridian/router.h"

int router_pick(const router_backend_view *b, int n, uint64_t tried, uint64_t lag_max_ms,
                int after)
{
    int best = -1;
    if (n <= 0) return -1;
    if (after < 0 || after >= n) after = n - 1;
    /* Visit in round-robin order starting after `after`, so ties rotate. */
    for (int k = 1; k <= n; k++) {
        int i = (after + k) % n;
        if (!b[i].eligible || !b[i].up || b[i].lag_ms > lag_max_ms) continue;
        if (i < 64 && (tried >> i) & 1) continue;
        if (best < 0 || b[i].outstanding < b[best].outstanding) best = i;
    }
    return best;
}
