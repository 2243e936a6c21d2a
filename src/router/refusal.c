/*
 * Reading a backend's refusal: the I/O-free part of the router's redirects
 * (include/meridian/router.h). Only an answer given before the backend did
 * anything with the request is a refusal; a request whose outcome may be
 * anything but "nothing happened" is never sent again.
 */
#include <stdio.h>
#include <string.h>

#include "meridian/json.h"
#include "meridian/router.h"

/*
 * The writer and the readers say 503 unavailable both before running a request
 * and after a commit whose durability is unknown; these are the beginnings of the
 * messages of the first kind (src/writer/sql.c, src/reader/sql.c). Anything else
 * is taken as an outcome, so a new message errs towards answering, never towards
 * a second commit. A reader's 503 unavailable is always a refusal: a reader only
 * reads (a read point that moved on, a page no storage node served, an I/O error),
 * so the read may go again, to the same reader or another.
 */
static const char *before_running[] = {
    "the writer is ",             /* recovering, opening, standing by, fenced, failed, stopping */
    "the reader is ",             /* starting, stopping: a reader only reads */
    "the instance is starting",   /* waiting for its region's word on its role: nothing runs */
    "cannot begin a transaction", /* BEGIN IMMEDIATE failed: nothing ran */
};

static bool said_before_running(const char *message)
{
    for (size_t i = 0; i < sizeof(before_running) / sizeof(before_running[0]); i++)
        if (strncmp(message, before_running[i], strlen(before_running[i])) == 0) return true;
    return false;
}

bool router_refusal(int status, const uint8_t *body, size_t len, bool to_writer,
                    bool region_primary, char *code, size_t code_max)
{
    if (code_max > 0) code[0] = '\0';
    if ((status != 503 && status != 403) || body == NULL || len == 0) return false;
    mrd_json_doc d;
    if (mrd_json_parse((const char *)body, len, &d, NULL) != 0) return false;
    const mrd_json *err = mrd_json_get(&d, mrd_json_root(&d), "error");
    const mrd_json *c = mrd_json_get(&d, err, "code");
    const mrd_json *m = mrd_json_get(&d, err, "message");
    bool refused = false;
    if (c != NULL && c->kind == MRD_JSON_STRING) {
        const char *s = mrd_json_str(&d, c);
        const char *msg = m != NULL && m->kind == MRD_JSON_STRING ? mrd_json_str(&d, m) : "";
        if (code_max > 0) snprintf(code, code_max, "%s", s);
        if (status == 403)
            refused = to_writer && strcmp(s, "read_only") == 0;
        else
            refused = strcmp(s, "draining") == 0 || strcmp(s, "fenced") == 0 ||
                      strcmp(s, "busy") == 0 ||
                      (strcmp(s, "secondary_region") == 0 && region_primary) ||
                      (strcmp(s, "unavailable") == 0 && (!to_writer || said_before_running(msg)));
    }
    mrd_json_free(&d);
    return refused;
}
