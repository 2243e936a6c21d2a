/* JSON string quoting for hand-built JSON answers. */
#include "meridian/common.h"

int mrd_json_quote(mrd_buf *out, const char *s)
{
    int rc = mrd_buf_append(out, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p != '\0'; p++) {
        switch (*p) {
        case '"':
            rc = mrd_buf_append(out, "\\\"", 2);
            break;
        case '\\':
            rc = mrd_buf_append(out, "\\\\", 2);
            break;
        case '\n':
            rc = mrd_buf_append(out, "\\n", 2);
            break;
        case '\r':
            rc = mrd_buf_append(out, "\\r", 2);
            break;
        case '\t':
            rc = mrd_buf_append(out, "\\t", 2);
            break;
        default:
            if (*p < 0x20)
                rc = mrd_buf_printf(out, "\\u%04x", *p);
            else
                rc = mrd_buf_append(out, p, 1);
        }
    }
    if (rc == 0) rc = mrd_buf_append(out, "\"", 1);
    return rc;
}
