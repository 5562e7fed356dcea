/*
 * hpcgym-init: PID 1 of every node, installed as /usr/lib/systemd/systemd and run by bwrap
 * --as-pid-1 with systemd's argv, so `ps` shows what a Rocky 9 node's PID 1 shows.
 *
 * It does what bwrap's own reaper did (reap every orphan, exit with the main child's status when
 * the main child, the node's shell, ends; the kernel then kills everything else in the node) and
 * serves the host over one inherited SOCK_SEQPACKET socket (fd named by HPCGYM_INIT_FD):
 *
 *   request  SPAWN: path, cwd, argv (argv[0] as given), env, uid/gid, how fds 0-2 are set up
 *            (/dev/null, init's own, a pipe whose write end the child holds at fd 3, or a descriptor
 *            passed with SCM_RIGHTS), further passed descriptors at fixed numbers;
 *   reply    SPAWNED: the pid in the node's namespace, or the errno of the step that failed;
 *   event    EXITED: a spawned child's raw wait(2) status, pushed as soon as it is reaped.
 *
 * The host treats every byte from here as hostile: the agent is root in the node. init makes
 * itself non-dumpable, so without CAP_SYS_PTRACE (dropped) nothing in the node can ptrace it or
 * open its /proc files, and signals from inside its own PID namespace cannot kill PID 1.
 * All catchable signals stay blocked in init (SIGCHLD is read from a signalfd); each child gets
 * the default dispositions and an empty mask back before it execs.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAGIC 0x31494748u /* "HGI1" little-endian */
#define REQ_SPAWN 1u
#define REP_SPAWNED 2u
#define EV_EXITED 3u
#define FLAG_MAIN 1u
#define IO_NULL 0
#define IO_INHERIT 1
#define IO_PIPE 2
#define IO_PASSED 3
#define MAX_MSG 65536
#define MAX_FDS 8
#define MAX_ARGS 512
#define MAX_TRACKED 4096
#define MAX_QUEUE 4096
/* Where a passed descriptor waits before it is moved to its target (the node's NOFILE is 1024). */
#define PARK_FD 512
#define EXEC_WAIT_MS 2000
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct request {
    uint32_t magic, kind, id, flags, uid, gid, argc, envc;
    uint8_t io[3], nfds;
    uint32_t targets[MAX_FDS];
};

struct message {
    uint32_t magic, kind, id;
    int32_t pid, value;
};

static int ctl = -1;
static pid_t main_pid = -1;
static pid_t tracked[MAX_TRACKED];
static int n_tracked;
static struct message queue[MAX_QUEUE];
static int q_head, q_len;

static void flush(void) {
    while (q_len > 0) {
        ssize_t n = send(ctl, &queue[q_head], sizeof queue[q_head], MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                _exit(1); /* the host is gone: so is the node */
            return;
        }
        q_head = (q_head + 1) % MAX_QUEUE;
        q_len--;
    }
}

static void push(uint32_t kind, uint32_t id, int32_t pid, int32_t value) {
    /* A host that reads nothing for thousands of events loses the newest; it still sees the death
     * in /proc, only not its cause. */
    if (q_len == MAX_QUEUE)
        return;
    struct message *m = &queue[(q_head + q_len) % MAX_QUEUE];
    m->magic = MAGIC;
    m->kind = kind;
    m->id = id;
    m->pid = pid;
    m->value = value;
    q_len++;
    flush();
}

static int untrack(pid_t pid) {
    for (int i = 0; i < n_tracked; i++)
        if (tracked[i] == pid) {
            tracked[i] = tracked[--n_tracked];
            return 1;
        }
    return 0;
}

static void reap(void) {
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (untrack(pid))
            push(EV_EXITED, 0, pid, status);
        if (pid == main_pid) {
            /* As bwrap's reaper did: the node ends with its shell, with the shell's status. */
            for (int i = 0; i < 10 && q_len > 0; i++) {
                struct pollfd out = {ctl, POLLOUT, 0};
                if (poll(&out, 1, 100) > 0)
                    flush();
            }
            _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
}

static void close_from(int low, int keep) {
    struct rlimit rl;
    int high = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < 65536)
        high = (int)rl.rlim_cur;
    for (int fd = low; fd < high; fd++)
        if (fd != keep)
            close(fd);
}

/* Runs in the child, between fork and exec; any failure is written to `report` as an errno. */
static void start_child(const struct request *rq, const char *path, const char *cwd, char **argv,
                        char **envp, const int *passed, int report) {
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            signal(sig, SIG_DFL);
    close(ctl);
    setsid();
    int err = 0;
    int parked[MAX_FDS];
    for (int i = 0; i < rq->nfds; i++) {
        parked[i] = fcntl(passed[i], F_DUPFD_CLOEXEC, PARK_FD);
        if (parked[i] < 0)
            goto fail;
    }
    int next = 0;
    int pipe_fds[2] = {-1, -1};
    for (int fd = 0; fd < 3; fd++) {
        int src = -1;
        switch (rq->io[fd]) {
        case IO_INHERIT:
            continue;
        case IO_NULL:
            src = open("/dev/null", O_RDWR | O_CLOEXEC);
            break;
        case IO_PIPE:
            if (pipe_fds[0] < 0 && pipe2(pipe_fds, O_CLOEXEC) != 0)
                goto fail;
            src = fd == 0 ? pipe_fds[0] : pipe_fds[1];
            break;
        case IO_PASSED:
            src = parked[next++];
            break;
        }
        if (src < 0 || dup2(src, fd) < 0)
            goto fail;
    }
    if (pipe_fds[1] >= 0 && dup2(pipe_fds[1], 3) < 0)
        goto fail;
    for (int i = next; i < rq->nfds; i++)
        if (dup2(parked[i], (int)rq->targets[i]) < 0)
            goto fail;
    if (rq->uid != 0 || rq->gid != 0) {
        if (setgroups(0, NULL) != 0 || setgid(rq->gid) != 0 || setuid(rq->uid) != 0)
            goto fail;
    }
    if (chdir(cwd) != 0)
        goto fail;
    if (strchr(path, '/')) {
        execve(path, argv, envp);
        goto fail;
    }
    /* A bare name is looked up in the child's own PATH, as execvpe(3) does. */
    const char *search = DEFAULT_PATH;
    for (char **e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            search = *e + 5;
    err = ENOENT;
    size_t len = strlen(path);
    while (*search) {
        const char *end = strchr(search, ':');
        size_t dir = end ? (size_t)(end - search) : strlen(search);
        char full[4096];
        if (dir + len + 2 <= sizeof full) {
            memcpy(full, search, dir);
            full[dir] = '/';
            memcpy(full + dir + 1, path, len + 1);
            execve(full, argv, envp);
            if (errno != ENOENT && errno != ENOTDIR)
                err = errno;
        }
        search += dir + (end ? 1 : 0);
    }
    errno = err;
fail:
    err = errno ? errno : EINVAL;
    while (write(report, &err, sizeof err) < 0 && errno == EINTR) {
    }
    _exit(127);
}

/* Splits `n` NUL-terminated strings off `*at`; 0 when they run past `end`. */
static int take_strings(char **at, char *end, char **out, uint32_t n) {
    for (uint32_t i = 0; i < n; i++) {
        char *nul = memchr(*at, 0, (size_t)(end - *at));
        if (nul == NULL)
            return 0;
        out[i] = *at;
        *at = nul + 1;
    }
    return 1;
}

static char buf[MAX_MSG];

static void serve(void) {
    union {
        struct cmsghdr align;
        char space[CMSG_SPACE(sizeof(int) * MAX_FDS)];
    } control;
    struct iovec iov = {buf, sizeof buf};
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    ssize_t n = recvmsg(ctl, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        _exit(1);
    }
    if (n == 0)
        _exit(1); /* the host closed its end */
    int passed[MAX_FDS];
    int got = 0;
    /* The host sends at most one SCM_RIGHTS header (musl's CMSG_NXTHDR does not build -Werror). */
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
        int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
        for (int i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (got < MAX_FDS)
                passed[got++] = fd;
            else
                close(fd);
        }
    }
    struct request rq;
    int bad = (size_t)n < sizeof rq || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC));
    if (!bad)
        memcpy(&rq, buf, sizeof rq);
    else
        memset(&rq, 0, sizeof rq);
    bad = bad || rq.magic != MAGIC || rq.kind != REQ_SPAWN || rq.argc < 1 || rq.argc > MAX_ARGS ||
          rq.envc > MAX_ARGS || rq.nfds != (uint32_t)got || (rq.flags & FLAG_MAIN && main_pid > 0);
    int passed_stdio = 0;
    for (int fd = 0; fd < 3 && !bad; fd++) {
        bad = rq.io[fd] > IO_PASSED || (rq.io[fd] == IO_PIPE && fd != 0);
        passed_stdio += rq.io[fd] == IO_PASSED;
    }
    for (int i = passed_stdio; i < got && !bad; i++)
        bad = rq.targets[i] < 4 || rq.targets[i] >= PARK_FD;
    bad = bad || passed_stdio > got || n_tracked == MAX_TRACKED;
    static char *strings[2 + 2 * MAX_ARGS + 2];
    char *at = buf + sizeof rq, *end = buf + n;
    char **argv = strings + 2, **envp = argv + (bad ? 0 : rq.argc + 1);
    if (!bad && take_strings(&at, end, strings, 2) && take_strings(&at, end, argv, rq.argc) &&
        take_strings(&at, end, envp, rq.envc)) {
        argv[rq.argc] = NULL;
        envp[rq.envc] = NULL;
    } else {
        bad = 1;
    }
    if (bad) {
        for (int i = 0; i < got; i++)
            close(passed[i]);
        push(REP_SPAWNED, rq.id, 0, n_tracked == MAX_TRACKED ? EAGAIN : EINVAL);
        return;
    }
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) {
        push(REP_SPAWNED, rq.id, 0, errno);
        for (int i = 0; i < got; i++)
            close(passed[i]);
        return;
    }
    pid_t pid = fork();
    if (pid == 0)
        start_child(&rq, strings[0], strings[1], argv, envp, passed, report[1]);
    int fork_errno = errno;
    close(report[1]);
    for (int i = 0; i < got; i++)
        close(passed[i]);
    if (pid < 0) {
        close(report[0]);
        push(REP_SPAWNED, rq.id, 0, fork_errno);
        return;
    }
    /* The child reports only a failure, then exits; a successful exec closes the pipe. A child the
     * node stops before it gets there counts as started after a while (it is the node's to stop). */
    int err = 0;
    struct pollfd pfd = {report[0], POLLIN, 0};
    if (poll(&pfd, 1, EXEC_WAIT_MS) > 0 && read(report[0], &err, sizeof err) == (ssize_t)sizeof err) {
        close(report[0]);
        waitpid(pid, NULL, 0);
        push(REP_SPAWNED, rq.id, 0, err);
        return;
    }
    close(report[0]);
    tracked[n_tracked++] = pid;
    if (rq.flags & FLAG_MAIN)
        main_pid = pid;
    push(REP_SPAWNED, rq.id, pid, 0);
}

/*
 * Hard-linked as /usr/libexec/hpcgym/daemons/NAME, this binary is a simulated daemon's process:
 * it sleeps until a signal ends it (the default dispositions init restored), under the daemon's
 * name with the unit's command line as its argv, so ps, pgrep and kill see munged, slurmd, ...
 * Static, it costs the node a few pages where a glibc `cat` blocked on a pipe cost ~250 KiB.
 */
#define DAEMON_DIR "/usr/libexec/hpcgym/daemons/"

static int is_daemon_stand_in(void) {
    char exe[256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    return strncmp(exe, DAEMON_DIR, sizeof DAEMON_DIR - 1) == 0;
}

int main(void) {
    const char *fd_text = getenv("HPCGYM_INIT_FD");
    if (fd_text == NULL) {
        if (getpid() != 1 && is_daemon_stand_in())
            for (;;)
                pause();
        return 2;
    }
    ctl = atoi(fd_text);
    if (ctl < 3 || fcntl(ctl, F_SETFD, FD_CLOEXEC) != 0)
        return 2;
    fcntl(ctl, F_SETFL, fcntl(ctl, F_GETFL) | O_NONBLOCK);
    unsetenv("HPCGYM_INIT_FD");
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    /* Whatever else bwrap left open (its seccomp and handshake descriptors) goes. */
    close_from(3, ctl);
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    int sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0)
        return 2;
    for (;;) {
        struct pollfd fds[2] = {{ctl, (short)(POLLIN | (q_len ? POLLOUT : 0)), 0}, {sfd, POLLIN, 0}};
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            return 1;
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo info;
            while (read(sfd, &info, sizeof info) == (ssize_t)sizeof info) {
            }
            reap();
        }
        if (fds[0].revents & POLLOUT)
            flush();
        if (fds[0].revents & POLLIN)
            serve();
        else if (fds[0].revents & (POLLHUP | POLLERR))
            _exit(1);
    }
}
