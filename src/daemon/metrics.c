/* Prometheus text rendering of a fixed table of series. */
#include <stdio.h>
#include <string.h>

#include "meridian/metrics.h"

/* Upper bounds in seconds; the last bucket is +Inf. */
static const double hist_bounds[MRD_HIST_BUCKETS - 1] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0,
};

void mrd_metrics_init(mrd_metrics *m)
{
    memset(m, 0, sizeof(*m));
}

mrd_metric *mrd_metric_add(mrd_metrics *m, mrd_metric_kind kind, const char *name,
                           const char *labels, const char *help)
{
    if (labels == NULL) labels = "";
    for (int i = 0; i < m->count; i++) {
        mrd_metric *s = &m->series[i];
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) return s;
    }
    if (m->count >= MRD_METRICS_MAX) return NULL;
    mrd_metric *s = &m->series[m->count++];
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    snprintf(s->name, sizeof(s->name), "%s", name);
    snprintf(s->labels, sizeof(s->labels), "%s", labels);
    snprintf(s->help, sizeof(s->help), "%s", help != NULL ? help : "");
    return s;
}

void mrd_metric_inc(mrd_metric *s, double by)
{
    if (s != NULL) s->value += by;
}

void mrd_metric_set(mrd_metric *s, double value)
{
    if (s != NULL) s->value = value;
}

void mrd_metric_observe(mrd_metric *s, double seconds)
{
    if (s == NULL) return;
    int b = 0;
    while (b < MRD_HIST_BUCKETS - 1 && seconds > hist_bounds[b]) b++;
    s->buckets[b]++;
    s->count++;
    s->sum += seconds;
}

double mrd_metric_quantile(const mrd_metric *s, double q)
{
    if (s == NULL || s->count == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)s->count);
    if (rank >= s->count) rank = s->count - 1;
    uint64_t seen = 0;
    for (int b = 0; b < MRD_HIST_BUCKETS; b++) {
        seen += s->buckets[b];
        if (seen > rank) return b < MRD_HIST_BUCKETS - 1 ? hist_bounds[b] : hist_bounds[b - 1];
    }
    return hist_bounds[MRD_HIST_BUCKETS - 2];
}

static const char *kind_name(mrd_metric_kind kind)
{
    switch (kind) {
    case MRD_COUNTER:
        return "counter";
    case MRD_GAUGE:
        return "gauge";
    case MRD_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* HELP and TYPE once per metric name, before its first series. */
static bool name_seen_before(const mrd_metrics *m, int index)
{
    for (int i = 0; i < index; i++)
        if (strcmp(m->series[i].name, m->series[index].name) == 0) return true;
    return false;
}

static int render_histogram(const mrd_metric *s, mrd_buf *out)
{
    const char *sep = s->labels[0] != '\0' ? "," : "";
    uint64_t cumulative = 0;
    int rc = 0;
    for (int b = 0; b < MRD_HIST_BUCKETS && rc == 0; b++) {
        cumulative += s->buckets[b];
        if (b < MRD_HIST_BUCKETS - 1)
            rc = mrd_buf_printf(out, "%s_bucket{%s%sle=\"%g\"} %llu\n", s->name, s->labels, sep,
                                hist_bounds[b], (unsigned long long)cumulative);
        else
            rc = mrd_buf_printf(out, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", s->name, s->labels,
                                sep, (unsigned long long)cumulative);
    }
    const char *lb = s->labels[0] != '\0' ? "{" : "";
    const char *rb = s->labels[0] != '\0' ? "}" : "";
    if (rc == 0) rc = mrd_buf_printf(out, "%s_sum%s%s%s %.9g\n", s->name, lb, s->labels, rb, s->sum);
    if (rc == 0)
        rc = mrd_buf_printf(out, "%s_count%s%s%s %llu\n", s->name, lb, s->labels, rb,
                            (unsigned long long)s->count);
    return rc;
}

int mrd_metrics_render(const mrd_metrics *m, mrd_buf *out)
{
    int rc = 0;
    for (int i = 0; i < m->count && rc == 0; i++) {
        const mrd_metric *s = &m->series[i];
        if (!name_seen_before(m, i))
            rc = mrd_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", s->name, s->help, s->name,
                                kind_name(s->kind));
        if (rc != 0) break;
        if (s->kind == MRD_HISTOGRAM)
            rc = render_histogram(s, out);
        else if (s->labels[0] != '\0')
            rc = mrd_buf_printf(out, "%s{%s} %.17g\n", s->name, s->labels, s->value);
        else
            rc = mrd_buf_printf(out, "%s %.17g\n", s->name, s->value);
    }
    return rc;
}
