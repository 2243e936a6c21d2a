/*
 * What the glue makes of a storage node's answer, header values and the
 * reconnect backoff: small pure decisions kept out of the libuv code so that
 * tests/unit/volume checks them directly.
 */
#include <stdio.h>
#include <string.h>

#include "meridian/json.h"
#include "meridian/volume.h"

uint64_t vol_backoff_ms(uint32_t failures)
{
    uint64_t ms = VOL_BACKOFF_MS_MIN;
    for (uint32_t i = 0; i < failures && ms < VOL_BACKOFF_MS_MAX; i++)
        ms *= 2;
    return ms < VOL_BACKOFF_MS_MAX ? ms : VOL_BACKOFF_MS_MAX;
}

int vol_parse_u64(const char *text, uint64_t *out)
{
    if (text == NULL || text[0] == '\0') return MRD_EPARSE;
    uint64_t v = 0;
    for (const char *p = text; *p; p++) {
        if (*p < '0' || *p > '9') return MRD_EPARSE;
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10) return MRD_EPARSE;
        v = v * 10 + d;
    }
    if (text[0] == '0' && text[1] != '\0') return MRD_EPARSE;
    *out = v;
    return 0;
}

/* The "code" of {"error":{"code":...}} into code; "" when the body is not such JSON. */
static void error_code(const uint8_t *body, size_t len, char *code, size_t code_len)
{
    code[0] = '\0';
    if (body == NULL || len == 0) return;
    mrd_json_doc doc;
    if (mrd_json_parse((const char *)body, len, &doc, NULL) != 0) return;
    const mrd_json *err = mrd_json_get(&doc, mrd_json_root(&doc), "error");
    const mrd_json *c = mrd_json_get(&doc, err, "code");
    if (c != NULL && c->kind == MRD_JSON_STRING)
        snprintf(code, code_len, "%s", mrd_json_str(&doc, c));
    mrd_json_free(&doc);
}

vol_answer vol_answer_classify(int status, const uint8_t *body, size_t len, char *code,
                               size_t code_len)
{
    char scratch[64];
    if (code == NULL || code_len == 0) code = scratch, code_len = sizeof(scratch);
    code[0] = '\0';
    if (status == 200) return VOL_ANS_OK;
    error_code(body, len, code, code_len);
    if (status == 409 && strcmp(code, "stale_epoch") == 0) return VOL_ANS_STALE;
    if (status == 409 && strcmp(code, "fence_required") == 0) return VOL_ANS_FENCE;
    if (status == 409 && strcmp(code, "incomplete") == 0) return VOL_ANS_INCOMPLETE;
    if (status == 410) return VOL_ANS_GONE;
    if (status == 503 && strcmp(code, "log_failed") == 0) return VOL_ANS_LOG_FAILED;
    if (status >= 500 && status <= 599) return VOL_ANS_RETRY;
    return VOL_ANS_BAD;
}

const char *vol_answer_name(vol_answer a)
{
    static const char *const names[] = {"ok",   "stale_epoch", "fence_required", "incomplete",
                                        "gone", "retry",       "log_failed",     "bad"};
    return (unsigned)a < MRD_ARRAY_LEN(names) ? names[a] : "?";
}
