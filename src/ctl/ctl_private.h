/* Internals shared by the ctl module's files. */
#ifndef MERIDIAN_CTL_PRIVATE_H
#define MERIDIAN_CTL_PRIVATE_H

#include "meridian/ctl.h"

#define CTL_PID_FILE "meridiand.pid"
#define CTL_LOG_FILE "meridiand.log"
#define CTL_POLL_MS 100
#define CTL_NODES_MAX (TOPO_REGIONS_MAX * (TOPO_STORAGE + TOPO_INSTANCES_MAX + 1 + TOPO_ROUTERS_MAX))

void ctl_node_dir(const ctl_ctx *ctx, const topo_node *node, char *buf, size_t len);
bool ctl_pid_is_node(pid_t pid, const char *id);
int ctl_spawn(const ctl_ctx *ctx, const topo_node *node, pid_t *out, mrd_msg *msg);
void ctl_log_tail(const ctl_ctx *ctx, const topo_node *node, int lines, char *buf, size_t len);
void ctl_sleep_ms(uint64_t ms);

#endif
