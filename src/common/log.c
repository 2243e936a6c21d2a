/*
 * Structured log: one event per line, key=value, on stderr. The node id and
 * the minimum level are set once by main() before any other thread exists and
 * only read afterwards.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "meridian/common.h"

static char log_node[64] = "-";
static mrd_log_level log_min = MRD_LOG_INFO;

void mrd_log_init(const char *node_id, mrd_log_level min_level)
{
    snprintf(log_node, sizeof(log_node), "%s", node_id != NULL ? node_id : "-");
    log_min = min_level;
}

static const char *level_name(mrd_log_level level)
{
    switch (level) {
    case MRD_LOG_DEBUG:
        return "debug";
    case MRD_LOG_INFO:
        return "info";
    case MRD_LOG_WARN:
        return "warn";
    case MRD_LOG_ERROR:
        return "error";
    }
    return "info";
}

void mrd_log(mrd_log_level level, const char *event, const char *fmt, ...)
{
    if (level < log_min) return;
    char line[2048];
    uint64_t ms = mrd_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    int n = snprintf(line, sizeof(line),
                     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03dZ level=%s node=%s event=%s",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(ms % 1000), level_name(level), log_node, event);
    if (n < 0) return;
    if (fmt != NULL && fmt[0] != '\0' && (size_t)n < sizeof(line) - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
        va_end(ap);
        if (m > 0) n += m;
    }
    if ((size_t)n >= sizeof(line) - 1) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    /* One write per line keeps lines whole when several threads log. */
    fwrite(line, 1, (size_t)n, stderr);
    fflush(stderr);
}
