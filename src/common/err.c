/* Error names and human messages. */
#include <stdarg.h>
#include <stdio.h>

#include "meridian/common.h"

const char *mrd_strerror(int err)
{
    switch (err) {
    case MRD_OK:
        return "ok";
#define MRD_ERR_TEXT(name, value, text)                                                            \
    case name:                                                                                     \
        return text;
        MRD_ERRORS(MRD_ERR_TEXT)
#undef MRD_ERR_TEXT
    }
    return "unknown error";
}

const char *mrd_errname(int err)
{
    switch (err) {
    case MRD_OK:
        return "MRD_OK";
#define MRD_ERR_NAME(name, value, text)                                                            \
    case name:                                                                                     \
        return #name;
        MRD_ERRORS(MRD_ERR_NAME)
#undef MRD_ERR_NAME
    }
    return "MRD_EUNKNOWN";
}

int mrd_fail(mrd_msg *msg, int err, const char *fmt, ...)
{
    if (msg != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg->text, sizeof(msg->text), fmt, ap);
        va_end(ap);
    }
    return err;
}
