/* A compile-only stand-in for the BSDs' <sys/event.h> (the declarations
   as FreeBSD has them), so tests/compile_checks.sh compiles the POSIX
   loop's kqueue backend on Linux under the strict warnings. It is never
   linked or run: kqueue itself is tested only where the system has it. */
#ifndef WSCH_STUB_SYS_EVENT_H
#define WSCH_STUB_SYS_EVENT_H
#include <stdint.h>
#include <time.h>
struct kevent {
    uintptr_t ident;
    short filter;
    unsigned short flags;
    unsigned int fflags;
    int64_t data;
    void *udata;
};
#define EVFILT_READ (-1)
#define EVFILT_WRITE (-2)
#define EV_ADD 0x0001
#define EV_DELETE 0x0002
#define EV_ERROR 0x4000
#define EV_EOF 0x8000
#define EV_SET(kevp, a, b, c, d, e, f)                                                            \
    do {                                                                                          \
        struct kevent *stub_kev = (kevp);                                                         \
        stub_kev->ident = (a);                                                                    \
        stub_kev->filter = (short)(b);                                                            \
        stub_kev->flags = (unsigned short)(c);                                                    \
        stub_kev->fflags = (unsigned int)(d);                                                     \
        stub_kev->data = (e);                                                                     \
        stub_kev->udata = (f);                                                                    \
    } while (0)
int kqueue(void);
int kevent(int kq, const struct kevent *changes, int nchanges, struct kevent *events, int nevents,
           const struct timespec *timeout);
#endif
