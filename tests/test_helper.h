/* TEST_HELPER marks the functions of the tests' shared headers: a suite may
   use only some of them, and the others must not warn. */
#ifndef TEST_HELPER
#if defined(__GNUC__)
#define TEST_HELPER static __attribute__((unused))
#else
#define TEST_HELPER static
#endif
#endif
