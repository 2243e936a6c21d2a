/*
 * sqlx: the SQL thread of a writer or reader, and the bridge between it and
 * the process's event loop.
 *
 * SQLite calls its VFS synchronously, and a page may have to come from a
 * storage node; so SQL never runs on the libuv loop. A sqlx owns one thread
 * that runs jobs one after another, in submission order: a job's work runs on
 * the SQL thread, its done callback afterwards on the loop. From the SQL
 * thread, sqlx_call_loop runs a function on the loop and blocks until that
 * function (or a callback it set up) calls sqlx_call_done: that is how the
 * VFS's page store reads a page or ships a commit through the loop-owned
 * volume client.
 *
 * Limits: at most SQLX_JOBS_MAX jobs wait (sqlx_submit says MRD_EBUSY
 * beyond). sqlx_stop is asynchronous: the running job finishes (the loop
 * keeps serving its loop calls meanwhile), the waiting ones are dropped
 * (their done runs with cancelled set), the thread is joined, and then
 * `stopped` runs on the loop and the sqlx is freed.
 */
#ifndef MERIDIAN_SQLX_H
#define MERIDIAN_SQLX_H

#include <stdbool.h>
#include <uv.h>

#include "meridian/common.h"

#define SQLX_JOBS_MAX 4096

typedef struct sqlx sqlx;
typedef struct sqlx_job sqlx_job;

struct sqlx_job {
    void (*work)(sqlx_job *job);                 /* SQL thread */
    void (*done)(sqlx_job *job, bool cancelled); /* loop */
    void *ud;
    sqlx_job *next; /* private */
};

int sqlx_start(uv_loop_t *loop, sqlx **out, mrd_msg *msg);
/* Queues job (owned by the caller until done runs). */
int sqlx_submit(sqlx *x, sqlx_job *job);
/* Jobs waiting or running. */
unsigned sqlx_depth(const sqlx *x);
/* Stops the thread (see above); stopped (may be NULL) runs once it is gone. */
void sqlx_stop(sqlx *x, void (*stopped)(void *ud), void *ud);

/* A call from the SQL thread onto the loop. */
typedef struct sqlx_call sqlx_call;
struct sqlx_call {
    void (*fn)(sqlx_call *call); /* runs on the loop; must lead to sqlx_call_done */
    void *ud;
    int status; /* what sqlx_call_done set */
    /* private */
    sqlx *x;
    bool finished;
    sqlx_call *next;
};

/* SQL thread: runs call->fn on the loop and waits for sqlx_call_done; returns its status. */
int sqlx_call_loop(sqlx *x, sqlx_call *call);
/* Loop: the call is over; the SQL thread resumes. */
void sqlx_call_done(sqlx_call *call, int status);

#endif
