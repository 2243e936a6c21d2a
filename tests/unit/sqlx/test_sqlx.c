/*
 * The SQL thread: jobs run in order off the loop and finish on it; a job can
 * call onto the loop and block until the loop (now or from a later
 * callback) answers; stopping cancels what never ran.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "meridian/sqlx.h"

#define JOBS 200

typedef struct {
    sqlx_job job;
    sqlx *x;
    int index;
    int got;          /* what the loop answered to the job's call */
    bool ran, done, cancelled;
    uv_thread_t ran_on;
} test_job;

static uv_loop_t loop;
static int order[JOBS], n_order, n_done;
static uv_thread_t loop_thread;
static uv_timer_t later;
static sqlx_call *pending_call;

static void answer_later(uv_timer_t *t)
{
    (void)t;
    sqlx_call_done(pending_call, 7);
}

/* Runs on the loop: odd indexes answer at once, even ones from a timer. */
static void loop_fn(sqlx_call *call)
{
    test_job *j = call->ud;
    uv_thread_t self = uv_thread_self();
    assert_true(uv_thread_equal(&self, &loop_thread));
    if (j->index % 2) {
        sqlx_call_done(call, j->index * 10);
    } else {
        pending_call = call;
        uv_timer_start(&later, answer_later, 1, 0);
    }
}

static void work(sqlx_job *job)
{
    test_job *j = job->ud;
    j->ran = true;
    j->ran_on = uv_thread_self();
    order[n_order++] = j->index;
    sqlx_call call = {.fn = loop_fn, .ud = j};
    j->got = sqlx_call_loop(j->x, &call);
}

static void done(sqlx_job *job, bool cancelled)
{
    test_job *j = job->ud;
    uv_thread_t self = uv_thread_self();
    assert_true(uv_thread_equal(&self, &loop_thread));
    j->done = true;
    j->cancelled = cancelled;
    n_done++;
}

static void stopped(void *ud)
{
    *(bool *)ud = true;
}

static void jobs_in_order_with_calls_onto_the_loop(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &later);
    loop_thread = uv_thread_self();
    sqlx *x;
    mrd_msg msg = {{0}};
    assert_int_equal(sqlx_start(&loop, &x, &msg), 0);
    static test_job jobs[JOBS];
    for (int i = 0; i < JOBS; i++) {
        jobs[i] = (test_job){.job = {.work = work, .done = done}, .x = x, .index = i};
        jobs[i].job.ud = &jobs[i];
        assert_int_equal(sqlx_submit(x, &jobs[i].job), 0);
    }
    while (n_done < JOBS)
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < JOBS; i++) {
        assert_int_equal(order[i], i);
        assert_true(jobs[i].ran && jobs[i].done && !jobs[i].cancelled);
        assert_false(uv_thread_equal(&jobs[i].ran_on, &loop_thread));
        assert_int_equal(jobs[i].got, i % 2 ? i * 10 : 7);
    }
    assert_int_equal(sqlx_depth(x), 0);
    bool is_stopped = false;
    sqlx_stop(x, stopped, &is_stopped);
    while (!is_stopped)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&later, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void block_work(sqlx_job *job)
{
    test_job *j = job->ud;
    j->ran = true;
    sqlx_call call = {.fn = loop_fn, .ud = j}; /* index 0: answered from a timer */
    j->got = sqlx_call_loop(j->x, &call);
}

static void stop_cancels_what_never_ran(void **state)
{
    (void)state;
    uv_loop_init(&loop);
    uv_timer_init(&loop, &later);
    loop_thread = uv_thread_self();
    n_done = 0;
    sqlx *x;
    mrd_msg msg = {{0}};
    assert_int_equal(sqlx_start(&loop, &x, &msg), 0);
    static test_job jobs[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (test_job){.job = {.work = block_work, .done = done}, .x = x, .index = 0};
        jobs[i].job.ud = &jobs[i];
        assert_int_equal(sqlx_submit(x, &jobs[i].job), 0);
    }
    /* The first job blocks in its call until the loop turns; stop now. */
    bool is_stopped = false;
    sqlx_stop(x, stopped, &is_stopped);
    while (!is_stopped)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(n_done, 3);
    int cancelled = 0;
    for (int i = 0; i < 3; i++)
        cancelled += jobs[i].cancelled;
    assert_true(cancelled >= 2); /* the running one finished; the rest never ran */
    uv_close((uv_handle_t *)&later, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(jobs_in_order_with_calls_onto_the_loop),
        cmocka_unit_test(stop_cancels_what_never_ran),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
