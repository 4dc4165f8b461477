/* greatest.h stand-in: the subset of the greatest C test library's API that
   this project's tests use, written for this project. `make test
   GREATEST=/path/to/greatest.h` builds the same tests with the real library.

   Output matches greatest's summary line "Pass: N, fail: N, skip: N." so the
   runner reads either. Argument -v prints every test name. */
#ifndef GREATEST_H
#define GREATEST_H

#include <stdio.h>
#include <string.h>

enum greatest_test_res {
    GREATEST_TEST_RES_PASS = 0,
    GREATEST_TEST_RES_FAIL = -1,
    GREATEST_TEST_RES_SKIP = 1
};

typedef struct greatest_run_info {
    unsigned int passed, failed, skipped;
    unsigned int assertions;
    int verbose;
    const char *fail_file;
    unsigned int fail_line;
    const char *msg;
    const char *suite;
    void (*setup)(void *);
    void *setup_arg;
    void (*teardown)(void *);
    void *teardown_arg;
} greatest_run_info;

extern greatest_run_info greatest_info;

#define TEST static enum greatest_test_res
#define SUITE(NAME) void NAME(void); void NAME(void)
#define SUITE_EXTERN(NAME) void NAME(void)

#define GREATEST_SET_SETUP_CB(CB, UDATA) (greatest_info.setup = (CB), greatest_info.setup_arg = (UDATA))
#define GREATEST_SET_TEARDOWN_CB(CB, UDATA) (greatest_info.teardown = (CB), greatest_info.teardown_arg = (UDATA))
#define SET_SETUP GREATEST_SET_SETUP_CB
#define SET_TEARDOWN GREATEST_SET_TEARDOWN_CB

#define GREATEST__RUN(NAME, CALL)                                                   \
    do {                                                                            \
        enum greatest_test_res greatest__res;                                       \
        greatest_info.msg = NULL;                                                   \
        if (greatest_info.setup) greatest_info.setup(greatest_info.setup_arg);      \
        greatest__res = (CALL);                                                     \
        if (greatest_info.teardown) greatest_info.teardown(greatest_info.teardown_arg); \
        greatest__report(NAME, greatest__res);                                      \
    } while (0)
#define RUN_TEST(TEST_FN) GREATEST__RUN(#TEST_FN, TEST_FN())
#define RUN_TEST1(TEST_FN, ARG) GREATEST__RUN(#TEST_FN, TEST_FN(ARG))
#define RUN_TESTp(TEST_FN, ...) GREATEST__RUN(#TEST_FN, TEST_FN(__VA_ARGS__))

#define RUN_SUITE(S_FN)                                                             \
    do {                                                                            \
        greatest_info.suite = #S_FN;                                                \
        greatest_info.setup = NULL;                                                 \
        greatest_info.teardown = NULL;                                              \
        if (greatest_info.verbose) printf("* Suite %s:\n", #S_FN);                  \
        S_FN();                                                                     \
    } while (0)

#define PASS() return GREATEST_TEST_RES_PASS
#define SKIP() return GREATEST_TEST_RES_SKIP
#define SKIPm(MSG) do { greatest_info.msg = (MSG); return GREATEST_TEST_RES_SKIP; } while (0)
#define FAILm(MSG)                                                                  \
    do {                                                                            \
        greatest_info.fail_file = __FILE__;                                         \
        greatest_info.fail_line = __LINE__;                                         \
        greatest_info.msg = (MSG);                                                  \
        return GREATEST_TEST_RES_FAIL;                                              \
    } while (0)
#define FAIL() FAILm(NULL)

#define ASSERTm(MSG, COND)                                                          \
    do {                                                                            \
        greatest_info.assertions++;                                                 \
        if (!(COND)) FAILm(MSG);                                                    \
    } while (0)
#define ASSERT(COND) ASSERTm(#COND, COND)
#define ASSERT_FALSEm(MSG, COND) ASSERTm(MSG, !(COND))
#define ASSERT_FALSE(COND) ASSERTm(#COND " is false", !(COND))
#define ASSERT_EQm(MSG, EXP, GOT) ASSERTm(MSG, (EXP) == (GOT))
#define ASSERT_EQ(EXP, GOT) ASSERTm(#EXP " == " #GOT, (EXP) == (GOT))
#define ASSERT_NEQm(MSG, EXP, GOT) ASSERTm(MSG, (EXP) != (GOT))
#define ASSERT_NEQ(EXP, GOT) ASSERTm(#EXP " != " #GOT, (EXP) != (GOT))
#define ASSERT_GT(A, B) ASSERTm(#A " > " #B, (A) > (B))
#define ASSERT_GTE(A, B) ASSERTm(#A " >= " #B, (A) >= (B))
#define ASSERT_LT(A, B) ASSERTm(#A " < " #B, (A) < (B))
#define ASSERT_LTE(A, B) ASSERTm(#A " <= " #B, (A) <= (B))

/* Prints both values with FMT when they differ. */
#define ASSERT_EQ_FMTm(MSG, EXP, GOT, FMT)                                          \
    do {                                                                            \
        greatest_info.assertions++;                                                 \
        if ((EXP) != (GOT)) {                                                       \
            fprintf(stdout, "\nExpected: " FMT "\n     Got: " FMT "\n", (EXP), (GOT)); \
            FAILm(MSG);                                                             \
        }                                                                           \
    } while (0)
#define ASSERT_EQ_FMT(EXP, GOT, FMT) ASSERT_EQ_FMTm(#EXP " != " #GOT, EXP, GOT, FMT)

#define ASSERT_STR_EQm(MSG, EXP, GOT)                                               \
    do {                                                                            \
        const char *greatest__e = (EXP), *greatest__g = (GOT);                      \
        greatest_info.assertions++;                                                 \
        if (greatest__g == NULL || strcmp(greatest__e, greatest__g) != 0) {         \
            fprintf(stdout, "\nExpected: \"%s\"\n     Got: \"%s\"\n", greatest__e,  \
                    greatest__g ? greatest__g : "(null)");                          \
            FAILm(MSG);                                                             \
        }                                                                           \
    } while (0)
#define ASSERT_STR_EQ(EXP, GOT) ASSERT_STR_EQm(#EXP " != " #GOT, EXP, GOT)
#define ASSERT_STRN_EQm(MSG, EXP, GOT, SIZE) ASSERTm(MSG, strncmp((EXP), (GOT), (SIZE)) == 0)
#define ASSERT_STRN_EQ(EXP, GOT, SIZE) ASSERT_STRN_EQm(#EXP " != " #GOT, EXP, GOT, SIZE)
#define ASSERT_MEM_EQm(MSG, EXP, GOT, SIZE) ASSERTm(MSG, memcmp((EXP), (GOT), (SIZE)) == 0)
#define ASSERT_MEM_EQ(EXP, GOT, SIZE) ASSERT_MEM_EQm(#EXP " != " #GOT, EXP, GOT, SIZE)

/* Runs a helper that returns a test result; fails the caller on failure. */
#define CHECK_CALL(RES)                                                             \
    do {                                                                            \
        enum greatest_test_res greatest__r = (RES);                                 \
        if (greatest__r != GREATEST_TEST_RES_PASS) return greatest__r;              \
    } while (0)

static void greatest__report(const char *name, enum greatest_test_res res) {
    if (res == GREATEST_TEST_RES_PASS) {
        greatest_info.passed++;
        if (greatest_info.verbose) printf("  PASS %s\n", name);
    } else if (res == GREATEST_TEST_RES_SKIP) {
        greatest_info.skipped++;
        printf("  SKIP %s: %s\n", name, greatest_info.msg ? greatest_info.msg : "");
    } else {
        greatest_info.failed++;
        printf("  FAIL %s (%s): %s (%s:%u)\n", name, greatest_info.suite ? greatest_info.suite : "",
               greatest_info.msg ? greatest_info.msg : "", greatest_info.fail_file ? greatest_info.fail_file : "?",
               greatest_info.fail_line);
    }
    fflush(stdout);
}

#define GREATEST_MAIN_DEFS() greatest_run_info greatest_info

#define GREATEST_MAIN_BEGIN()                                                       \
    do {                                                                            \
        int greatest__i;                                                            \
        memset(&greatest_info, 0, sizeof greatest_info);                            \
        for (greatest__i = 1; greatest__i < argc; greatest__i++)                    \
            if (strcmp(argv[greatest__i], "-v") == 0) greatest_info.verbose = 1;    \
    } while (0)

#define GREATEST_MAIN_END()                                                         \
    do {                                                                            \
        printf("\nTotal: %u tests, %u assertions\n",                                \
               greatest_info.passed + greatest_info.failed + greatest_info.skipped, \
               greatest_info.assertions);                                           \
        printf("Pass: %u, fail: %u, skip: %u.\n", greatest_info.passed,             \
               greatest_info.failed, greatest_info.skipped);                        \
        return greatest_info.failed ? 1 : 0;                                        \
    } while (0)

#endif
