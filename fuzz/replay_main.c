/* Replay driver: runs each file named on the command line through the
   target's LLVMFuzzerTestOneInput(), without libFuzzer. Linked with one
   target and built with the sanitizers, it turns the committed corpora into
   regression tests. A failed check or a sanitizer report ends the process
   with a nonzero status; success prints "ok FILE" per file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int replay_file(const char *path) {
    FILE *f = fopen(path, "rb");
    unsigned char *buf = NULL;
    size_t len = 0, cap = 0, n;
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        return 1;
    }
    for (;;) {
        if (len == cap) {
            unsigned char *nb;
            cap = cap ? cap * 2 : 4096;
            nb = (unsigned char *)realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                return 1;
            }
            buf = nb;
        }
        n = fread(buf + len, 1, cap - len, f);
        if (n == 0) break;
        len += n;
    }
    fclose(f);
    {
        /* An exact-size copy, so a read past the end is caught. */
        unsigned char *exact = (unsigned char *)malloc(len ? len : 1);
        size_t i;
        if (!exact) {
            free(buf);
            return 1;
        }
        for (i = 0; i < len; i++) exact[i] = buf[i];
        free(buf);
        (void)LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    printf("ok %s\n", path);
    fflush(stdout);
    return 0;
}

int main(int argc, char **argv) {
    int i, bad = 0;
    for (i = 1; i < argc; i++) bad |= replay_file(argv[i]);
    return bad;
}
