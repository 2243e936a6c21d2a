/* Names of the quorum cores' actions, for traces and logs. */
#include "meridian/quorum.h"

const char *quorum_act_name(quorum_act_kind kind)
{
    static const char *const names[] = {
        [QUORUM_ACT_SEND] = "SEND",       [QUORUM_ACT_VCL] = "VCL",
        [QUORUM_ACT_VDL] = "VDL",         [QUORUM_ACT_WAITER] = "WAITER",
        [QUORUM_ACT_PERSIST] = "PERSIST", [QUORUM_ACT_SCL] = "SCL",
        [QUORUM_ACT_ACK] = "ACK",         [QUORUM_ACT_GAP] = "GAP",
        [QUORUM_ACT_SERVE] = "SERVE",     [QUORUM_ACT_FENCE] = "FENCE",
        [QUORUM_ACT_SERVE_OLD] = "SERVE_OLD",
    };
    if ((unsigned)kind >= MRD_ARRAY_LEN(names) || !names[kind]) return "?";
    return names[kind];
}
