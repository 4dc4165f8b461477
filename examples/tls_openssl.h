/* tls_openssl.h -- wss:// for the POSIX loop of ws_channel.h, through OpenSSL.

   The loop's transport hook (wsch_posix_transport) made with OpenSSL 1.1.1
   or 3.x (Debian: libssl-dev; link with -lssl -lcrypto). Include it after
   ws_channel.h built with WS_CHANNEL_POSIX; every function is static.

   A server (certificate chain and key in PEM files):
       static tls_openssl tls;
       if (tls_openssl_server(&tls, "cert.pem", "key.pem") != WSCH_OK)
           fprintf(stderr, "%s\n", tls_openssl_error(&tls));
       listen_desc.transport = &tls.transport;
   A client:
       tls_openssl_client(&tls, NULL, 0);     // the system's trust store
       tls_openssl_client(&tls, "ca.pem", 0); // or only the CAs in a file
       client_opts.transport = &tls.transport;

   What a client checks, by default: the server's chain against the trust
   store, and its name against the URL's host: a DNS name through
   SSL_set1_host (also sent as SNI), an IPv4 or IPv6 literal against the
   certificate's IP address entries (no SNI: RFC 6066 forbids literals).
   insecure = 1 turns both checks off; it exists for tests (a program
   should say so to its user). TLS 1.2 is the least either side accepts.

   Errors: every failure is written, in words, to tls_openssl_error() and
   given to on_error (set it after the create call) as it happens, e.g.
   "TLS handshake with localhost failed: certificate verify failed:
   certificate has expired". The loop itself only sees
   WSCH_POSIX_IO_ERROR, so this is how a program can tell its user why.

   Sockets: the adapter reads and writes the loop's non-blocking socket
   itself, through a BIO of its own, so that its writes use MSG_NOSIGNAL
   (SO_NOSIGPIPE where that is what the system has): no SIGPIPE whether or
   not the program calls wsch_posix_handle_signals(). */
#ifndef TLS_OPENSSL_H
#define TLS_OPENSSL_H

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#ifdef MSG_NOSIGNAL
#define TLS_OPENSSL_SEND_FLAGS MSG_NOSIGNAL
#else
#define TLS_OPENSSL_SEND_FLAGS 0
#endif

#if defined(__GNUC__)
#define TLS_OPENSSL_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TLS_OPENSSL_DEF static __attribute__((unused)) /* a program uses one side only */
#else
#define TLS_OPENSSL_PRINTF(f, a)
#define TLS_OPENSSL_DEF static
#endif

typedef struct tls_openssl {
    wsch_posix_transport transport; /* give &transport to the loop */
    SSL_CTX *ctx;
    BIO_METHOD *bio;
    int server;
    int insecure;                   /* client: no chain or name check (tests only) */
    void (*on_error)(const char *msg, void *user);  /* optional: each failure, as it happens */
    void *user;                     /* for on_error */
    char error[512];                /* the last failure */
} tls_openssl;

/* One connection. */
typedef struct tls_openssl_session {
    SSL *ssl;
    tls_openssl *t;
    int failed;                     /* a fatal error: no close_notify may follow */
    char peer[280];                 /* "with HOST" or "from a client", for error text */
    char host[256];                 /* a copy the SNI macro may take (it casts away const) */
} tls_openssl_session;

TLS_OPENSSL_DEF void tls_openssl_fail(tls_openssl *t, const char *fmt, ...) TLS_OPENSSL_PRINTF(2, 3);
TLS_OPENSSL_DEF void tls_openssl_fail(tls_openssl *t, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t->error, sizeof t->error, fmt, ap);
    va_end(ap);
    if (t->on_error) t->on_error(t->error, t->user);
}

/* OpenSSL's reason for the last error in its queue, in words. */
TLS_OPENSSL_DEF const char *tls_openssl_reason(void) {
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    return r ? r : "unknown error";
}

TLS_OPENSSL_DEF const char *tls_openssl_error(const tls_openssl *t) { return t->error[0] ? t->error : "no error"; }

/* ---- the BIO: the loop's socket, without SIGPIPE ---- */

TLS_OPENSSL_DEF int tls_openssl_bio_write(BIO *b, const char *data, int len) {
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t n;
    BIO_clear_retry_flags(b);
    do {
        n = send(fd, data, (size_t)len, TLS_OPENSSL_SEND_FLAGS);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_write(b);
    return (int)n;
}

TLS_OPENSSL_DEF int tls_openssl_bio_read(BIO *b, char *buf, int cap) {
    int fd = (int)(intptr_t)BIO_get_data(b);
    ssize_t n;
    BIO_clear_retry_flags(b);
    do {
        n = recv(fd, buf, (size_t)cap, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) BIO_set_retry_read(b);
    return (int)n;
}

TLS_OPENSSL_DEF long tls_openssl_bio_ctrl(BIO *b, int cmd, long num, void *ptr) {
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;   /* nothing is buffered here */
}

TLS_OPENSSL_DEF int tls_openssl_bio_create(BIO *b) {
    BIO_set_init(b, 1);
    return 1;
}

/* ---- the hook ---- */

TLS_OPENSSL_DEF wsch_posix_io tls_openssl_result(tls_openssl_session *s, int r, const char *what) {
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ) return WSCH_POSIX_IO_WANT_READ;
    if (e == SSL_ERROR_WANT_WRITE) return WSCH_POSIX_IO_WANT_WRITE;
    if (e == SSL_ERROR_ZERO_RETURN) return WSCH_POSIX_IO_EOF;  /* the peer's close_notify */
    s->failed = 1;
    if (e == SSL_ERROR_SYSCALL && ERR_peek_last_error() == 0) {
        if (r == 0 || errno == 0) tls_openssl_fail(s->t, "TLS %s %s: connection closed by the peer", what, s->peer);
        else tls_openssl_fail(s->t, "TLS %s %s: %s", what, s->peer, strerror(errno));
    } else {
        tls_openssl_fail(s->t, "TLS %s %s failed: %s", what, s->peer, tls_openssl_reason());
    }
    return WSCH_POSIX_IO_ERROR;
}

TLS_OPENSSL_DEF void *tls_openssl_open(int fd, int server, const char *host, void *user) {
    tls_openssl *t = (tls_openssl *)user;
    tls_openssl_session *s;
    BIO *b;
    unsigned char ip[16];
    int literal;
    if (!server && !host && !t->insecure) {
        tls_openssl_fail(t, "TLS: no host name to verify the server's certificate against");
        return NULL;
    }
    s = (tls_openssl_session *)calloc(1, sizeof *s);
    if (!s) return NULL;
    s->t = t;
    snprintf(s->peer, sizeof s->peer, server ? "from a client" : "with %s", host ? host : "the server");
    s->ssl = SSL_new(t->ctx);
    b = s->ssl ? BIO_new(t->bio) : NULL;
    if (!b) {
        tls_openssl_fail(t, "TLS: cannot create a session: %s", tls_openssl_reason());
        SSL_free(s->ssl);
        free(s);
        return NULL;
    }
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        (void)setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, (socklen_t)sizeof one);
    }
#endif
    BIO_set_data(b, (void *)(intptr_t)fd);
    SSL_set_bio(s->ssl, b, b);      /* the session owns the BIO now */
    if (server) {
        SSL_set_accept_state(s->ssl);
        return s;
    }
    SSL_set_connect_state(s->ssl);
    if (!host) return s;            /* insecure, and nothing to name */
    if (strlen(host) >= sizeof s->host) {
        tls_openssl_fail(t, "TLS: the host name is too long");
        SSL_free(s->ssl);
        free(s);
        return NULL;
    }
    memcpy(s->host, host, strlen(host) + 1);
    literal = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!t->insecure) {
        int ok;
        SSL_set_hostflags(s->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);   /* "*.example", never "w*.example" */
        ok = literal ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), host) : SSL_set1_host(s->ssl, host);
        if (ok != 1) {
            tls_openssl_fail(t, "TLS: cannot check the server's name against \"%s\"", host);
            SSL_free(s->ssl);
            free(s);
            return NULL;
        }
    }
    if (!literal && SSL_set_tlsext_host_name(s->ssl, s->host) != 1) {
        tls_openssl_fail(t, "TLS: \"%s\" cannot be sent as SNI", host);
        SSL_free(s->ssl);
        free(s);
        return NULL;
    }
    return s;
}

TLS_OPENSSL_DEF wsch_posix_io tls_openssl_handshake(void *session, void *user) {
    tls_openssl_session *s = (tls_openssl_session *)session;
    long v;
    int r;
    (void)user;
    ERR_clear_error();
    r = SSL_do_handshake(s->ssl);
    if (r == 1) return WSCH_POSIX_IO_DONE;
    v = s->t->server || s->t->insecure ? X509_V_OK : SSL_get_verify_result(s->ssl);
    if (v != X509_V_OK && SSL_get_error(s->ssl, r) == SSL_ERROR_SSL) {
        /* The reason a user can act on: expired, wrong name, unknown CA. */
        s->failed = 1;
        tls_openssl_fail(s->t, "TLS handshake %s failed: certificate verify failed: %s", s->peer,
                         X509_verify_cert_error_string(v));
        return WSCH_POSIX_IO_ERROR;
    }
    return tls_openssl_result(s, r, "handshake");
}

TLS_OPENSSL_DEF wsch_posix_io tls_openssl_read(void *session, void *buf, size_t cap, size_t *n, void *user) {
    tls_openssl_session *s = (tls_openssl_session *)session;
    int r;
    (void)user;
    ERR_clear_error();
    r = SSL_read(s->ssl, buf, cap > INT_MAX ? INT_MAX : (int)cap);
    if (r > 0) {
        *n = (size_t)r;
        return WSCH_POSIX_IO_DONE;
    }
    return tls_openssl_result(s, r, "read");
}

TLS_OPENSSL_DEF wsch_posix_io tls_openssl_write(void *session, const void *data, size_t len, size_t *n, void *user) {
    tls_openssl_session *s = (tls_openssl_session *)session;
    int r;
    (void)user;
    ERR_clear_error();
    r = SSL_write(s->ssl, data, len > INT_MAX ? INT_MAX : (int)len);
    if (r > 0) {
        *n = (size_t)r;
        return WSCH_POSIX_IO_DONE;
    }
    return tls_openssl_result(s, r, "write");
}

/* A close_notify, once, when the session is still sound. */
TLS_OPENSSL_DEF wsch_posix_io tls_openssl_shutdown(void *session, void *user) {
    tls_openssl_session *s = (tls_openssl_session *)session;
    (void)user;
    if (s->failed) return WSCH_POSIX_IO_ERROR;
    ERR_clear_error();
    return SSL_shutdown(s->ssl) >= 0 ? WSCH_POSIX_IO_DONE : WSCH_POSIX_IO_ERROR;
}

TLS_OPENSSL_DEF void tls_openssl_close(void *session, void *user) {
    tls_openssl_session *s = (tls_openssl_session *)session;
    (void)user;
    SSL_free(s->ssl);               /* and its BIO; the loop closes the socket */
    free(s);
    ERR_clear_error();
}

/* ---- contexts ---- */

TLS_OPENSSL_DEF void tls_openssl_free(tls_openssl *t) {
    SSL_CTX_free(t->ctx);
    BIO_meth_free(t->bio);
    t->ctx = NULL;
    t->bio = NULL;
}

/* What both sides share; WSCH_OK or WSCH_ERR_NOMEM (error set). */
TLS_OPENSSL_DEF int tls_openssl_init(tls_openssl *t, int server) {
    memset(t, 0, sizeof *t);
    t->server = server;
    t->ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    t->bio = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "wsch socket");
    if (!t->ctx || !t->bio || !BIO_meth_set_write(t->bio, tls_openssl_bio_write) ||
        !BIO_meth_set_read(t->bio, tls_openssl_bio_read) || !BIO_meth_set_ctrl(t->bio, tls_openssl_bio_ctrl) ||
        !BIO_meth_set_create(t->bio, tls_openssl_bio_create) ||
        SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) != 1) {
        tls_openssl_fail(t, "TLS: cannot set up OpenSSL: %s", tls_openssl_reason());
        tls_openssl_free(t);
        return WSCH_ERR_NOMEM;
    }
    /* The loop offers what is left of a partial write again, possibly from
       another address (its queue): OpenSSL must accept both. */
    SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    /* A peer that drops TCP without close_notify after the WebSocket close
       is common; the WebSocket close handshake already tells a clean end
       from a cut one (1006), so this reads as EOF, not as an error. */
    SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    t->transport.open = tls_openssl_open;
    t->transport.handshake = tls_openssl_handshake;
    t->transport.read = tls_openssl_read;
    t->transport.write = tls_openssl_write;
    t->transport.shutdown = tls_openssl_shutdown;
    t->transport.close = tls_openssl_close;
    t->transport.user = t;
    return WSCH_OK;
}

/* A server context from a PEM certificate chain (leaf first) and its
   private key. WSCH_OK, or WSCH_ERR_ARG / WSCH_ERR_NOMEM with
   tls_openssl_error() saying what is wrong with which file. */
TLS_OPENSSL_DEF int tls_openssl_server(tls_openssl *t, const char *cert_file, const char *key_file) {
    int rc = tls_openssl_init(t, 1);
    if (rc != WSCH_OK) return rc;
    if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_file) != 1) {
        tls_openssl_fail(t, "TLS: cannot load the certificate %s: %s", cert_file, tls_openssl_reason());
    } else if (SSL_CTX_use_PrivateKey_file(t->ctx, key_file, SSL_FILETYPE_PEM) != 1) {
        tls_openssl_fail(t, "TLS: cannot load the private key %s: %s", key_file, tls_openssl_reason());
    } else if (SSL_CTX_check_private_key(t->ctx) != 1) {
        tls_openssl_fail(t, "TLS: the key %s does not match the certificate %s", key_file, cert_file);
    } else {
        return WSCH_OK;
    }
    tls_openssl_free(t);
    return WSCH_ERR_ARG;
}

/* A client context: trust the CAs in ca_file (PEM), or the system's store
   when ca_file is NULL; insecure = 1 checks nothing (tests only).
   WSCH_OK, or WSCH_ERR_ARG / WSCH_ERR_NOMEM with tls_openssl_error(). */
TLS_OPENSSL_DEF int tls_openssl_client(tls_openssl *t, const char *ca_file, int insecure) {
    int rc = tls_openssl_init(t, 0);
    if (rc != WSCH_OK) return rc;
    t->insecure = insecure;
    if (insecure) {
        SSL_CTX_set_verify(t->ctx, SSL_VERIFY_NONE, NULL);
        return WSCH_OK;
    }
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file ? SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) == 1
                : SSL_CTX_set_default_verify_paths(t->ctx) == 1)
        return WSCH_OK;
    if (ca_file) tls_openssl_fail(t, "TLS: cannot load the CA file %s: %s", ca_file, tls_openssl_reason());
    else tls_openssl_fail(t, "TLS: cannot load the system's trust store: %s", tls_openssl_reason());
    tls_openssl_free(t);
    return WSCH_ERR_ARG;
}

#endif /* TLS_OPENSSL_H */
