/* An instance process: writer or reader, as its region's agent says (src/cmd/instance.c). */
#ifndef MERIDIAN_CMD_INSTANCE_H
#define MERIDIAN_CMD_INSTANCE_H

#include "meridian/node.h"

int instance_start(mrd_node *node, mrd_msg *msg);

#endif
