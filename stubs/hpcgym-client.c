/* hpcgym's cluster-tool client, native. Installed (hard-linked) under the name of every simulated
 * tool in tools.list (sinfo, scontrol, systemctl, ssh, curl, ...). It does no work of its own: it
 * sends its argv and cwd over the node's control socket to the episode's controller, which runs
 * outside the sandbox and owns all cluster state, then prints the answer and exits with its code.
 * Which node is asking is known from the socket it arrives on, never from anything this says.
 *
 * It is a drop-in for hpcgym-client.py beside it and must stay byte-compatible with it: the same
 * request bytes, the same stdin rules and limits, the same output bytes and exit codes, the same
 * error text. Where that script's behaviour comes from Python itself, the rule is named here:
 *   - the tool's name is the basename of the path the kernel executed (a script's sys.argv[0]),
 *     not the argv[0] the caller chose;
 *   - argv and cwd bytes are decoded as UTF-8 with surrogateescape, stdin with `replace`
 *     (one U+FFFD per maximal invalid subpart), and json.dumps writes them ASCII-only;
 *   - the reply's stdout is encoded with surrogateescape, as Python's stdout is under C.UTF-8, and
 *     its stderr (and this program's own messages) with backslashreplace, as Python's stderr is.
 *
 * Wire format, both ways: 4-byte big-endian length, then that many bytes of UTF-8 JSON.
 *   request:  {"v": 1, "argv": [...], "cwd": "...", "stdin": "..." (only for the tools that read it)}
 *   reply:    {"stdout": "...", "stderr": "...", "exit_code": N}
 *
 * Built static (musl, by a pinned zig) as part of `invoke build-images`; see env/hpcgym/build/client.py.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define SOCKET_PATH "/run/hpcgym/control.sock"
#define MAX_STDIN_BYTES (1024 * 1024)
#define MAX_REPLY_BYTES (16 * 1024 * 1024)
/* Python's json module recurses once per nesting level and stops near its recursion limit. */
#define MAX_JSON_DEPTH 900

/* Tools that read standard input (sbatch without a script, munge, unmunge, ssh's remote command);
 * sacctmgr reads its commit answer;
 * every other tool leaves stdin alone, as the real one does, so `yes | sinfo` cannot block. */
static const char *const READS_STDIN[] = {"sbatch", "munge", "unmunge", "ssh", "sacctmgr"};

struct buf {
    char *p;
    size_t n, cap;
};

static const char *tool = "";
static size_t tool_len = 0;

static void write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void put(struct buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q)
            _exit(1);
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void puts_(struct buf *b, const char *s) { put(b, s, strlen(s)); }

static const char HEX[] = "0123456789abcdef";

static void put_u4(struct buf *b, unsigned v) {
    char s[6] = {'\\', 'u', HEX[(v >> 12) & 15], HEX[(v >> 8) & 15], HEX[(v >> 4) & 15], HEX[v & 15]};
    put(b, s, 6);
}

/* One UTF-8 character at p (n bytes left), as Python's decoder accepts it: no overlong forms, no
 * encoded surrogates, nothing past U+10FFFF. Returns its length and sets *cp; on an invalid
 * sequence returns 0 and sets *bad to the length of its maximal valid prefix (at least 1), which
 * is the range Python hands its error handler. `surrogates` accepts encoded surrogates (json's
 * surrogatepass). */
static size_t decode_utf8(const unsigned char *p, size_t n, uint32_t *cp, size_t *bad, int surrogates) {
    unsigned c = p[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF;
    *bad = 1;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        *cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        *cp = c & 0x0F;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED && !surrogates)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        *cp = c & 0x07;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n)
            return 0;
        unsigned d = p[i];
        if (d < (i == 1 ? lo : 0x80) || d > (i == 1 ? hi : 0xBF))
            return 0;
        *cp = (*cp << 6) | (d & 0x3F);
        *bad = i + 1;
    }
    *bad = 0;
    return need + 1;
}

/* json.dumps(ensure_ascii=True) of one code point. */
static void put_json_cp(struct buf *b, uint32_t cp) {
    switch (cp) {
    case '"': puts_(b, "\\\""); return;
    case '\\': puts_(b, "\\\\"); return;
    case '\n': puts_(b, "\\n"); return;
    case '\r': puts_(b, "\\r"); return;
    case '\t': puts_(b, "\\t"); return;
    case '\b': puts_(b, "\\b"); return;
    case '\f': puts_(b, "\\f"); return;
    }
    if (cp >= ' ' && cp <= '~') {
        char ch = (char)cp;
        put(b, &ch, 1);
    } else if (cp < 0x10000) {
        put_u4(b, cp);
    } else {
        cp -= 0x10000;
        put_u4(b, 0xD800 | (cp >> 10));
        put_u4(b, 0xDC00 | (cp & 0x3FF));
    }
}

enum undecodable { SURROGATEESCAPE, REPLACE };

static void put_json_string(struct buf *b, const char *s, size_t n, enum undecodable how) {
    const unsigned char *p = (const unsigned char *)s;
    put(b, "\"", 1);
    while (n) {
        uint32_t cp;
        size_t bad, len = decode_utf8(p, n, &cp, &bad, 0);
        if (len) {
            put_json_cp(b, cp);
        } else if (how == REPLACE) {
            put_json_cp(b, 0xFFFD);
            len = bad;
        } else {
            put_json_cp(b, 0xDC00 | p[0]);
            len = 1;
        }
        p += len;
        n -= len;
    }
    put(b, "\"", 1);
}

/* Bytes that came in as a str decoded with surrogateescape, written to stderr as Python's
 * backslashreplace writes them: valid UTF-8 as it is, each undecodable byte as `\udcXX`. */
static void put_backslashreplaced(struct buf *b, const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    while (n) {
        uint32_t cp;
        size_t bad, len = decode_utf8(p, n, &cp, &bad, 0);
        if (len) {
            put(b, p, len);
        } else {
            put_u4(b, 0xDC00 | p[0]);
            len = 1;
        }
        p += len;
        n -= len;
    }
}

static int unreachable(void) {
    /* The controller is the simulated slurmctld/munged/systemd; without it the tool cannot work. */
    struct buf b = {0};
    put_backslashreplaced(&b, tool, tool_len);
    puts_(&b, ": error: cannot reach the cluster controller at " SOCKET_PATH "\n");
    write_all(2, b.p, b.n);
    return 1;
}

/* --- the reply: a small JSON reader, as strict as json.loads ------------------------------------ */

struct text {
    uint32_t *cp;
    size_t n, cap;
};

struct reader {
    const unsigned char *p, *end;
    int depth;
};

static void text_add(struct text *t, uint32_t cp) {
    if (!t)
        return;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        uint32_t *q = realloc(t->cp, cap * sizeof *q);
        if (!q)
            _exit(1);
        t->cp = q;
        t->cap = cap;
    }
    t->cp[t->n++] = cp;
}

static void skip_ws(struct reader *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\t' || *r->p == '\n' || *r->p == '\r'))
        r->p++;
}

static int hex4(struct reader *r, unsigned *v) {
    if (r->end - r->p < 4)
        return 0;
    *v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = r->p[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return 0;
        *v = (*v << 4) | d;
    }
    r->p += 4;
    return 1;
}

/* A string literal (r->p just past its opening quote); its text goes to `out` unless NULL. */
static int read_string(struct reader *r, struct text *out) {
    for (;;) {
        if (r->p >= r->end)
            return 0;
        unsigned c = *r->p;
        if (c == '"') {
            r->p++;
            return 1;
        }
        if (c < 0x20)
            return 0; /* strict: control characters must be escaped */
        if (c != '\\') {
            uint32_t cp;
            size_t bad, len = decode_utf8(r->p, (size_t)(r->end - r->p), &cp, &bad, 1);
            if (!len)
                return 0;
            text_add(out, cp);
            r->p += len;
            continue;
        }
        r->p++;
        if (r->p >= r->end)
            return 0;
        c = *r->p++;
        switch (c) {
        case '"': text_add(out, '"'); break;
        case '\\': text_add(out, '\\'); break;
        case '/': text_add(out, '/'); break;
        case 'b': text_add(out, '\b'); break;
        case 'f': text_add(out, '\f'); break;
        case 'n': text_add(out, '\n'); break;
        case 'r': text_add(out, '\r'); break;
        case 't': text_add(out, '\t'); break;
        case 'u': {
            unsigned v, w;
            if (!hex4(r, &v))
                return 0;
            /* A high surrogate followed by an escaped low one is one character, as in json. */
            if (v >= 0xD800 && v <= 0xDBFF && r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u') {
                struct reader peek = {r->p + 2, r->end, 0};
                if (hex4(&peek, &w) && w >= 0xDC00 && w <= 0xDFFF) {
                    r->p = peek.p;
                    v = 0x10000 + ((v - 0xD800) << 10) + (w - 0xDC00);
                }
            }
            text_add(out, v);
            break;
        }
        default:
            return 0;
        }
    }
}

static int match_word(struct reader *r, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n) != 0)
        return 0;
    r->p += n;
    return 1;
}

/* A number as json.loads reads it; *value gets what Python's int() of it would be. */
static int read_number(struct reader *r, long long *value) {
    const unsigned char *start = r->p;
    int negative = 0, is_float = 0;
    if (r->p < r->end && *r->p == '-') {
        negative = 1;
        r->p++;
    }
    if (match_word(r, "Infinity"))
        return 0; /* int(inf) raises in Python; no exit code comes of it */
    if (r->p >= r->end || *r->p < '0' || *r->p > '9')
        return 0;
    if (*r->p == '0')
        r->p++;
    else
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    const unsigned char *int_end = r->p;
    if (r->p + 1 < r->end && *r->p == '.' && r->p[1] >= '0' && r->p[1] <= '9') {
        is_float = 1;
        r->p++;
        while (r->p < r->end && *r->p >= '0' && *r->p <= '9')
            r->p++;
    }
    if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
        const unsigned char *q = r->p + 1;
        if (q < r->end && (*q == '+' || *q == '-'))
            q++;
        if (q < r->end && *q >= '0' && *q <= '9') {
            is_float = 1;
            while (q < r->end && *q >= '0' && *q <= '9')
                q++;
            r->p = q;
        }
    }
    if (value) {
        if (is_float) {
            /* Rare enough (our controller sends ints) to leave to strtod, then truncate as int(). */
            char tmp[64];
            size_t n = (size_t)(r->p - start);
            if (n >= sizeof tmp)
                return 0;
            memcpy(tmp, start, n);
            tmp[n] = 0;
            double d = strtod(tmp, NULL);
            if (!(d > -9.2e18 && d < 9.2e18))
                return 0;
            *value = (long long)d;
        } else {
            unsigned long long v = 0;
            for (const unsigned char *q = start + negative; q < int_end; q++)
                v = v * 10 + (unsigned)(*q - '0'); /* wraps like the low bits exit() keeps */
            *value = negative ? (long long)(0 - v) : (long long)v;
        }
    }
    return 1;
}

static int read_value(struct reader *r);

static int read_container(struct reader *r, char close) {
    if (++r->depth > MAX_JSON_DEPTH)
        return 0;
    skip_ws(r);
    if (r->p < r->end && *r->p == close) {
        r->p++;
        r->depth--;
        return 1;
    }
    for (;;) {
        skip_ws(r);
        if (close == '}') {
            if (r->p >= r->end || *r->p != '"')
                return 0;
            r->p++;
            if (!read_string(r, NULL))
                return 0;
            skip_ws(r);
            if (r->p >= r->end || *r->p++ != ':')
                return 0;
            skip_ws(r);
        }
        if (!read_value(r))
            return 0;
        skip_ws(r);
        if (r->p >= r->end)
            return 0;
        char c = (char)*r->p++;
        if (c == close) {
            r->depth--;
            return 1;
        }
        if (c != ',')
            return 0;
    }
}

static int read_value(struct reader *r) {
    if (r->p >= r->end)
        return 0;
    switch (*r->p) {
    case '{': r->p++; return read_container(r, '}');
    case '[': r->p++; return read_container(r, ']');
    case '"': r->p++; return read_string(r, NULL);
    case 't': return match_word(r, "true");
    case 'f': return match_word(r, "false");
    case 'n': return match_word(r, "null");
    case 'N': return match_word(r, "NaN");
    case 'I': return match_word(r, "Infinity");
    }
    return read_number(r, NULL);
}

enum kind { ABSENT, STRING, INTEGER, OTHER };

struct field {
    enum kind kind;
    struct text text;
    long long integer;
};

struct reply {
    struct field out, err, code;
};

/* The top-level object; the last of repeated keys wins, as in a Python dict. */
static int read_reply(struct reader *r, struct reply *reply) {
    skip_ws(r);
    if (r->p >= r->end || *r->p++ != '{')
        return 0;
    r->depth = 1;
    skip_ws(r);
    if (r->p < r->end && *r->p == '}') {
        r->p++;
        return 1;
    }
    for (;;) {
        skip_ws(r);
        if (r->p >= r->end || *r->p++ != '"')
            return 0;
        struct text key = {0};
        if (!read_string(r, &key))
            return 0;
        struct field *f = NULL;
        static const struct {
            const char *name;
            size_t offset;
        } names[] = {
            {"stdout", offsetof(struct reply, out)},
            {"stderr", offsetof(struct reply, err)},
            {"exit_code", offsetof(struct reply, code)},
        };
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            size_t n = strlen(names[i].name), j;
            if (key.n != n)
                continue;
            for (j = 0; j < n && key.cp[j] == (unsigned char)names[i].name[j]; j++)
                ;
            if (j == n)
                f = (struct field *)((char *)reply + names[i].offset);
        }
        free(key.cp);
        skip_ws(r);
        if (r->p >= r->end || *r->p++ != ':')
            return 0;
        skip_ws(r);
        if (f) {
            free(f->text.cp);
            memset(f, 0, sizeof *f);
            f->kind = OTHER;
            if (r->p < r->end && *r->p == '"') {
                r->p++;
                if (!read_string(r, &f->text))
                    return 0;
                f->kind = STRING;
            } else if (r->p < r->end && (*r->p == '-' || (*r->p >= '0' && *r->p <= '9'))) {
                const unsigned char *start = r->p;
                if (read_number(r, &f->integer)) {
                    f->kind = INTEGER;
                } else {
                    r->p = start;
                    if (!read_value(r))
                        return 0;
                }
            } else if (match_word(r, "true")) {
                f->kind = INTEGER;
                f->integer = 1;
            } else if (match_word(r, "false")) {
                f->kind = INTEGER;
                f->integer = 0;
            } else if (!read_value(r)) {
                return 0;
            }
        } else if (!read_value(r)) {
            return 0;
        }
        skip_ws(r);
        if (r->p >= r->end)
            return 0;
        char c = (char)*r->p++;
        if (c == '}')
            return 1;
        if (c != ',')
            return 0;
    }
}

static void put_utf8(struct buf *b, uint32_t cp) {
    unsigned char s[4];
    size_t n;
    if (cp < 0x80) {
        s[0] = (unsigned char)cp;
        n = 1;
    } else if (cp < 0x800) {
        s[0] = (unsigned char)(0xC0 | (cp >> 6));
        s[1] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        s[0] = (unsigned char)(0xE0 | (cp >> 12));
        s[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        s[0] = (unsigned char)(0xF0 | (cp >> 18));
        s[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        s[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        s[3] = (unsigned char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    put(b, s, n);
}

/* stdout under C.UTF-8: surrogateescape gives back the byte a U+DC80..U+DCFF stands for; any other
 * lone surrogate cannot be written, and Python then writes nothing of the text. */
static int encode_stdout(const struct text *t, struct buf *b) {
    for (size_t i = 0; i < t->n; i++) {
        uint32_t cp = t->cp[i];
        if (cp >= 0xDC80 && cp <= 0xDCFF) {
            unsigned char byte = (unsigned char)(cp & 0xFF);
            put(b, &byte, 1);
        } else if (cp >= 0xD800 && cp <= 0xDFFF) {
            return 0;
        } else {
            put_utf8(b, cp);
        }
    }
    return 1;
}

/* stderr: backslashreplace turns every lone surrogate into `\udXXX`. */
static void encode_stderr(const struct text *t, struct buf *b) {
    for (size_t i = 0; i < t->n; i++) {
        uint32_t cp = t->cp[i];
        if (cp >= 0xD800 && cp <= 0xDFFF)
            put_u4(b, cp);
        else
            put_utf8(b, cp);
    }
}

/* --- the socket ------------------------------------------------------------------------------- */

static int recv_exact(int fd, char *p, size_t n) {
    while (n) {
        ssize_t got = recv(fd, p, n < (1u << 20) ? n : (1u << 20), 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return 0;
        p += got;
        n -= (size_t)got;
    }
    return 1;
}

static int send_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t sent = send(fd, p, n, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0)
            return 0;
        p += sent;
        n -= (size_t)sent;
    }
    return 1;
}

static int reads_stdin(void) {
    for (size_t i = 0; i < sizeof READS_STDIN / sizeof READS_STDIN[0]; i++)
        if (tool_len == strlen(READS_STDIN[i]) && memcmp(tool, READS_STDIN[i], tool_len) == 0)
            return 1;
    return 0;
}

/* Up to MAX_STDIN_BYTES, or to end of file (a BufferedReader's read(n)); -1 on a read error. */
static long read_stdin(char *p) {
    size_t n = 0;
    while (n < MAX_STDIN_BYTES) {
        ssize_t got = read(0, p + n, MAX_STDIN_BYTES - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return -1;
        if (got == 0)
            break;
        n += (size_t)got;
    }
    return (long)n;
}

int main(int argc, char **argv) {
    /* Python ignores SIGPIPE; a tool piped into `head` sees EPIPE, not a signal. */
    signal(SIGPIPE, SIG_IGN);
    /* A script's sys.argv[0] is the path the kernel executed, whatever argv[0] its caller chose. */
    const char *path = (const char *)getauxval(AT_EXECFN);
    if (!path)
        path = argc > 0 ? argv[0] : "";
    const char *slash = strrchr(path, '/');
    tool = slash ? slash + 1 : path;
    tool_len = strlen(tool);

    char cwd_buf[4097];
    char *cwd = getcwd(cwd_buf, sizeof cwd_buf);
    if (!cwd)
        cwd = "/";

    struct buf req = {0};
    put(&req, "\0\0\0\0", 4);
    puts_(&req, "{\"v\": 1, \"argv\": [");
    put_json_string(&req, tool, tool_len, SURROGATEESCAPE);
    for (int i = 1; i < argc; i++) {
        puts_(&req, ", ");
        put_json_string(&req, argv[i], strlen(argv[i]), SURROGATEESCAPE);
    }
    puts_(&req, "], \"cwd\": ");
    put_json_string(&req, cwd, strlen(cwd), SURROGATEESCAPE);
    if (reads_stdin() && fcntl(0, F_GETFD) != -1 && !isatty(0)) {
        char *in = malloc(MAX_STDIN_BYTES);
        if (!in)
            _exit(1);
        long n = read_stdin(in);
        if (n < 0) {
            struct buf msg = {0};
            put_backslashreplaced(&msg, tool, tool_len);
            puts_(&msg, ": error: cannot read standard input: ");
            puts_(&msg, strerror(errno));
            puts_(&msg, "\n");
            write_all(2, msg.p, msg.n);
            return 1;
        }
        puts_(&req, ", \"stdin\": ");
        put_json_string(&req, in, (size_t)n, REPLACE);
        free(in);
    }
    puts_(&req, "}");
    size_t body = req.n - 4;
    req.p[0] = (char)(body >> 24);
    req.p[1] = (char)(body >> 16);
    req.p[2] = (char)(body >> 8);
    req.p[3] = (char)body;

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return unreachable();
    struct sockaddr_un addr = {.sun_family = AF_UNIX, .sun_path = SOCKET_PATH};
    int rc;
    do
        rc = connect(fd, (struct sockaddr *)&addr, sizeof addr);
    while (rc < 0 && errno == EINTR);
    unsigned char header[4];
    if (rc < 0 || !send_all(fd, req.p, req.n) || !recv_exact(fd, (char *)header, 4))
        return unreachable();
    uint32_t length = (uint32_t)header[0] << 24 | (uint32_t)header[1] << 16 | (uint32_t)header[2] << 8 | header[3];
    if (length > MAX_REPLY_BYTES)
        return unreachable();
    char *data = malloc(length ? length : 1);
    if (!data || !recv_exact(fd, data, length))
        return unreachable();
    close(fd);

    struct reader r = {(const unsigned char *)data, (const unsigned char *)data + length, 0};
    /* json.loads on bytes drops a UTF-8 byte order mark. */
    if (length >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
        r.p += 3;
    struct reply reply = {0};
    if (!read_reply(&r, &reply))
        return unreachable();
    skip_ws(&r);
    if (r.p != r.end)
        return unreachable(); /* json's "Extra data" */
    if ((reply.out.kind != ABSENT && reply.out.kind != STRING) ||
        (reply.err.kind != ABSENT && reply.err.kind != STRING) ||
        (reply.code.kind != ABSENT && reply.code.kind != INTEGER))
        return unreachable(); /* our controller never sends these; the script would crash */

    struct buf out = {0}, err = {0};
    if (!encode_stdout(&reply.out.text, &out))
        return unreachable();
    write_all(1, out.p, out.n);
    encode_stderr(&reply.err.text, &err);
    write_all(2, err.p, err.n);
    return reply.code.kind == INTEGER ? (int)(reply.code.integer & 0xFF) : 1;
}
