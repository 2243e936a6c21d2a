/*
 * metrics: a process's counters, gauges and latency histograms, rendered in
 * the Prometheus text exposition format for GET /metrics.
 *
 * A registry owns a fixed table of series (MRD_METRICS_MAX); a series is a
 * metric name plus an optional label set, created once at start-up and
 * updated on the event loop afterwards. Histograms use fixed bucket bounds
 * (seconds, from 50 µs to 10 s) so that p50/p99 can be read from any scrape.
 * Nothing here allocates after start-up.
 */
#ifndef MERIDIAN_METRICS_H
#define MERIDIAN_METRICS_H

#include <stdint.h>

#include "meridian/common.h"

#define MRD_METRICS_MAX 128
#define MRD_METRIC_NAME_MAX 96
#define MRD_METRIC_LABELS_MAX 160
#define MRD_METRIC_HELP_MAX 160
#define MRD_HIST_BUCKETS 18

typedef enum { MRD_COUNTER, MRD_GAUGE, MRD_HISTOGRAM } mrd_metric_kind;

typedef struct {
    mrd_metric_kind kind;
    char name[MRD_METRIC_NAME_MAX];
    char labels[MRD_METRIC_LABELS_MAX]; /* `key="value",...` without braces, or empty */
    char help[MRD_METRIC_HELP_MAX];
    double value;                       /* counter / gauge */
    uint64_t buckets[MRD_HIST_BUCKETS]; /* histogram: counts per bucket (not cumulative) */
    uint64_t count;
    double sum;
} mrd_metric;

typedef struct {
    mrd_metric series[MRD_METRICS_MAX];
    int count;
} mrd_metrics;

void mrd_metrics_init(mrd_metrics *m);

/* Registers a series (or returns the existing one with the same name and labels).
 * labels may be NULL. Returns NULL when the table is full. */
mrd_metric *mrd_metric_add(mrd_metrics *m, mrd_metric_kind kind, const char *name,
                           const char *labels, const char *help);

void mrd_metric_inc(mrd_metric *s, double by);
void mrd_metric_set(mrd_metric *s, double value);
/* Records one observation in seconds. */
void mrd_metric_observe(mrd_metric *s, double seconds);
/* The q-quantile (0..1) of a histogram, estimated from its buckets (upper bound of the
 * bucket holding it); 0 when empty. */
double mrd_metric_quantile(const mrd_metric *s, double q);

/* Appends the Prometheus text format of every series to out. */
int mrd_metrics_render(const mrd_metrics *m, mrd_buf *out);

#endif
