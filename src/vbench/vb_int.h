/* Internals shared by the files of src/vbench. */
#ifndef MERIDIAN_VB_INT_H
#define MERIDIAN_VB_INT_H

#include "meridian/topo.h"
#include "meridian/vbench.h"
#include "meridian/volume.h"

#define VB_RECORDS_DEFAULT 10000u
#define VB_INFLIGHT_DEFAULT 64u
#define VB_DELTA_BYTES_DEFAULT 200u
#define VB_PAGES_DEFAULT 1000u
#define VB_VERIFY_TIMEOUT_MS_DEFAULT 60000u
#define VB_PROBE_COUNT_DEFAULT 1000u

typedef struct {
    const char *command;
    const char *topology;
    const char *data;
    const char *region;
    const char *log;
    const char *node;
    uint64_t records;
    bool records_set;
    uint32_t inflight;
    uint32_t delta_bytes;
    uint64_t pages;
    uint64_t duration_ms;
    uint64_t timeout_ms;
    uint64_t seed;
    uint32_t count;
    bool json;
} vb_args;

typedef struct {
    topology topo;
    int region;
    char data[TOPO_PATH_MAX];
    char certs[TOPO_PATH_MAX];
} vb_env;

/* cli.c: the vol_config every command starts from. */
void vb_vol_config(const vb_env *env, vol_config *cfg);

int vb_bench(const vb_args *a, vb_env *env);
int vb_verify(const vb_args *a, vb_env *env);
int vb_probe(const vb_args *a, vb_env *env);

#endif
