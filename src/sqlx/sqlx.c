/* The SQL thread and its bridge to the loop (include/meridian/sqlx.h). */
#include <stdlib.h>
#include <string.h>

#include "meridian/sqlx.h"

struct sqlx {
    uv_loop_t *loop;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cond;          /* the SQL thread waits for jobs or call completions */
    sqlx_job *queue, *tail;  /* waiting jobs */
    sqlx_job *done_head, *done_tail; /* finished jobs, for the loop */
    sqlx_call *calls, *calls_tail;   /* calls for the loop to run */
    unsigned depth;
    bool stopping;
    bool exited; /* the thread has left its loop: join it */
    bool closing;
    void (*stopped)(void *ud);
    void *stopped_ud;
    uv_async_t wake; /* SQL thread -> loop: calls to run, jobs done */
};

static void finish_stop(sqlx *x);

static void push_job(sqlx_job **head, sqlx_job **tail, sqlx_job *job)
{
    job->next = NULL;
    if (*tail != NULL)
        (*tail)->next = job;
    else
        *head = job;
    *tail = job;
}

static void thread_main(void *arg)
{
    sqlx *x = arg;
    uv_mutex_lock(&x->mu);
    for (;;) {
        while (x->queue == NULL && !x->stopping)
            uv_cond_wait(&x->cond, &x->mu);
        if (x->stopping) break;
        sqlx_job *job = x->queue;
        x->queue = job->next;
        if (x->queue == NULL) x->tail = NULL;
        uv_mutex_unlock(&x->mu);
        job->work(job);
        uv_mutex_lock(&x->mu);
        push_job(&x->done_head, &x->done_tail, job);
        uv_async_send(&x->wake);
    }
    x->exited = true;
    uv_async_send(&x->wake);
    uv_mutex_unlock(&x->mu);
}

/* Loop: run the calls the SQL thread posted and finish the jobs it completed. */
static void on_wake(uv_async_t *a)
{
    sqlx *x = a->data;
    uv_mutex_lock(&x->mu);
    sqlx_call *calls = x->calls;
    x->calls = x->calls_tail = NULL;
    sqlx_job *done = x->done_head;
    x->done_head = x->done_tail = NULL;
    bool exited = x->exited;
    uv_mutex_unlock(&x->mu);
    while (calls != NULL) {
        sqlx_call *next = calls->next;
        calls->fn(calls);
        calls = next;
    }
    while (done != NULL) {
        sqlx_job *next = done->next;
        uv_mutex_lock(&x->mu);
        x->depth--;
        uv_mutex_unlock(&x->mu);
        done->done(done, false);
        done = next;
    }
    if (exited) finish_stop(x);
}

int sqlx_start(uv_loop_t *loop, sqlx **out, mrd_msg *msg)
{
    sqlx *x = calloc(1, sizeof(*x));
    if (x == NULL) return mrd_fail(msg, MRD_ENOMEM, "sqlx: out of memory");
    x->loop = loop;
    uv_mutex_init(&x->mu);
    uv_cond_init(&x->cond);
    uv_async_init(loop, &x->wake, on_wake);
    x->wake.data = x;
    int rc = uv_thread_create(&x->thread, thread_main, x);
    if (rc != 0) {
        uv_close((uv_handle_t *)&x->wake, NULL);
        return mrd_fail(msg, MRD_EIO, "sqlx: cannot start the SQL thread: %s", uv_strerror(rc));
    }
    *out = x;
    return 0;
}

int sqlx_submit(sqlx *x, sqlx_job *job)
{
    uv_mutex_lock(&x->mu);
    if (x->stopping || x->depth >= SQLX_JOBS_MAX) {
        uv_mutex_unlock(&x->mu);
        return x->stopping ? MRD_ECLOSED : MRD_EBUSY;
    }
    x->depth++;
    push_job(&x->queue, &x->tail, job);
    uv_cond_signal(&x->cond);
    uv_mutex_unlock(&x->mu);
    return 0;
}

unsigned sqlx_depth(const sqlx *x)
{
    uv_mutex_lock((uv_mutex_t *)&x->mu);
    unsigned d = x->depth;
    uv_mutex_unlock((uv_mutex_t *)&x->mu);
    return d;
}

static void free_on_close(uv_handle_t *h)
{
    sqlx *x = h->data;
    uv_mutex_destroy(&x->mu);
    uv_cond_destroy(&x->cond);
    free(x);
}

/* Loop: the thread is gone; cancel what never ran and close. */
static void finish_stop(sqlx *x)
{
    if (x->closing) return;
    x->closing = true;
    uv_thread_join(&x->thread);
    sqlx_job *job = x->queue;
    x->queue = x->tail = NULL;
    while (job != NULL) {
        sqlx_job *next = job->next;
        x->depth--;
        job->done(job, true);
        job = next;
    }
    void (*stopped)(void *) = x->stopped;
    void *ud = x->stopped_ud;
    uv_close((uv_handle_t *)&x->wake, free_on_close);
    if (stopped != NULL) stopped(ud);
}

void sqlx_stop(sqlx *x, void (*stopped)(void *ud), void *ud)
{
    uv_mutex_lock(&x->mu);
    x->stopping = true;
    x->stopped = stopped;
    x->stopped_ud = ud;
    uv_cond_broadcast(&x->cond);
    uv_mutex_unlock(&x->mu);
}

int sqlx_call_loop(sqlx *x, sqlx_call *call)
{
    call->x = x;
    call->finished = false;
    call->next = NULL;
    uv_mutex_lock(&x->mu);
    if (x->calls_tail != NULL)
        x->calls_tail->next = call;
    else
        x->calls = call;
    x->calls_tail = call;
    uv_async_send(&x->wake);
    while (!call->finished)
        uv_cond_wait(&x->cond, &x->mu);
    uv_mutex_unlock(&x->mu);
    return call->status;
}

void sqlx_call_done(sqlx_call *call, int status)
{
    sqlx *x = call->x;
    uv_mutex_lock(&x->mu);
    call->status = status;
    call->finished = true;
    uv_cond_broadcast(&x->cond);
    uv_mutex_unlock(&x->mu);
}
