/* The common module: CRC32C vectors, buffers, atomic file replacement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "meridian/common.h"

static void crc32c_known_vectors(void **state)
{
    /* RFC 3720 (iSCSI) B.4 test vectors and the classic "123456789" check value. */
    assert_int_equal(mrd_crc32c(0, "123456789", 9), 0xE3069283u);
    uint8_t zeros[32] = {0};
    assert_int_equal(mrd_crc32c(0, zeros, sizeof(zeros)), 0x8A9136AAu);
    uint8_t ones[32];
    memset(ones, 0xff, sizeof(ones));
    assert_int_equal(mrd_crc32c(0, ones, sizeof(ones)), 0x62A8AB43u);
    uint8_t inc[32];
    for (int i = 0; i < 32; i++) inc[i] = (uint8_t)i;
    assert_int_equal(mrd_crc32c(0, inc, sizeof(inc)), 0x46DD794Eu);
}

static void crc32c_is_incremental(void **state)
{
    const char *text = "the log is the database; quorum, not consensus";
    size_t len = strlen(text);
    uint32_t whole = mrd_crc32c(0, text, len);
    for (size_t cut = 0; cut <= len; cut++) {
        uint32_t part = mrd_crc32c(mrd_crc32c(0, text, cut), text + cut, len - cut);
        assert_int_equal(part, whole);
    }
}

static void buf_grows_and_consumes(void **state)
{
    mrd_buf b;
    mrd_buf_init(&b);
    for (int i = 0; i < 1000; i++) assert_int_equal(mrd_buf_printf(&b, "%04d", i), 0);
    assert_int_equal(b.len, 4000);
    assert_memory_equal(b.data, "00000001", 8);
    mrd_buf_consume(&b, 3996);
    assert_int_equal(b.len, 4);
    assert_memory_equal(b.data, "0999", 4);
    mrd_buf_free(&b);
}

static void atomic_write_replaces(void **state)
{
    char dir[] = "/tmp/mrd-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256];
    snprintf(path, sizeof(path), "%s/meta", dir);
    mrd_msg msg;
    assert_int_equal(mrd_write_file_atomic(path, "one", 3, &msg), 0);
    assert_int_equal(mrd_write_file_atomic(path, "two!", 4, &msg), 0);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(mrd_read_file(path, 100, &data, &len, &msg), 0);
    assert_int_equal(len, 4);
    assert_string_equal(data, "two!");
    free(data);
    assert_int_equal(mrd_read_file(path, 2, &data, &len, &msg), MRD_ETOOBIG);
    assert_non_null(strstr(msg.text, "limit"));
    unlink(path);
    rmdir(dir);
}

static void errors_have_names(void **state)
{
    assert_string_equal(mrd_errname(MRD_ECRC), "MRD_ECRC");
    assert_string_equal(mrd_strerror(MRD_ESTALE), "stale epoch");
    mrd_msg msg;
    assert_int_equal(mrd_fail(&msg, MRD_EPARSE, "x.yaml:%d: bad", 3), MRD_EPARSE);
    assert_string_equal(msg.text, "x.yaml:3: bad");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(crc32c_known_vectors), cmocka_unit_test(crc32c_is_incremental),
        cmocka_unit_test(buf_grows_and_consumes), cmocka_unit_test(atomic_write_replaces),
        cmocka_unit_test(errors_have_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
