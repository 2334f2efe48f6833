/*
 * The example worker in C: the same flags, --help, exit codes and log lines as
 * examples/worker.rs, through the C API (include/zk_master.h). It logs from the
 * role-change callback and sleeps in sigwait until ctrl-c or SIGTERM (no polling,
 * no CPU while idle), then resigns so its node disappears at once.
 *
 *   scripts/build-capi        # builds the libraries, target/c/worker and target/c/hello
 *   target/c/worker --connect 127.0.0.1:2181 --group /Roles/workers
 *
 * With --trace-roles FILE it polls zkm_is_master() about every millisecond and
 * appends every change of what it returns, stamped with CLOCK_MONOTONIC, in the
 * format of examples/worker.rs (see there).
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zk_master.h"

static const char USAGE[] =
    "usage: worker [--connect HOSTS] [--group PATH] [--masters N] "
    "[--session-timeout-ms MS] [--lease-margin-ms MS] [--auth USER:PASSWORD] [--data TEXT] "
    "[--trace-roles FILE]   (worker --help explains them)";

static const char HELP[] =
    "worker: the zk-master example worker. It joins a group, logs \"I've become master!\" or\n"
    "\"[<masters>] is masters, I'm slave\" on every change, and on ctrl-c or SIGTERM deletes its\n"
    "node at once so the next member takes over.\n"
    "\n"
    "Options (each takes a value):\n"
    "  --connect HOSTS           ZooKeeper servers, host:port[,host:port...][/chroot]\n"
    "                            [default: 127.0.0.1:2181]\n"
    "  --group PATH              the group's node; created if missing [default: /Roles/workers]\n"
    "  --masters N               how many members are masters at once [default: 1]\n"
    "  --session-timeout-ms MS   the session timeout asked of the server; the server may clamp\n"
    "                            it to its own bounds [default: 10000]\n"
    "  --lease-margin-ms MS      how long before the server could expire the session the worker\n"
    "                            stops believing it is master [default: a tenth of the timeout]\n"
    "  --auth USER:PASSWORD      digest credentials: only sessions with them may then create or\n"
    "                            delete members; anyone may still read the group [default: none]\n"
    "  --data TEXT               the member node's data [default: 1]\n"
    "  --trace-roles FILE        append every change of is_master() to FILE, stamped with\n"
    "                            CLOCK_MONOTONIC nanoseconds (for the fault tests) [default: none]\n"
    "  -h, --help                print this help and exit\n"
    "\n"
    "Environment:\n"
    "  RUST_LOG                  log filter of env_logger [default: info,zookeeper=warn];\n"
    "                            RUST_LOG=debug shows every session, read and lease renewal\n"
    "\n"
    "Exit status: 0 after a clean exit (ctrl-c, SIGTERM), 1 when it cannot join, 2 on bad flags.\n";

/* ---- Logging: env_logger's format and RUST_LOG's simplest directives ---- */

/* One RUST_LOG directive: records whose target starts with `target` (every record for an
 * empty one) up to `level`. */
struct directive {
    char target[128];
    int level;
};

static struct {
    struct directive directives[16];
    size_t count;
} filter;

static const char *const LEVEL_NAMES[] = {"OFF", "ERROR", "WARN", "INFO", "DEBUG", "TRACE"};

static int level_of(const char *name) {
    static const char *const lower[] = {"off", "error", "warn", "info", "debug", "trace"};
    for (int i = 0; i < 6; i++)
        if (strcmp(name, lower[i]) == 0)
            return i;
    return -1;
}

/* Reads RUST_LOG (default "info,zookeeper=warn"): "LEVEL", "TARGET=LEVEL" or "TARGET". */
static int parse_filter(const char *spec) {
    char buf[1024];
    int max = ZKM_LOG_OFF;
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL;
    for (char *part = strtok_r(buf, ",", &save); part && filter.count < 16;
         part = strtok_r(NULL, ",", &save)) {
        struct directive *d = &filter.directives[filter.count];
        char *eq = strchr(part, '=');
        int level = level_of(eq ? eq + 1 : part);
        if (eq) {
            *eq = '\0';
            snprintf(d->target, sizeof d->target, "%s", part);
        } else if (level >= 0) {
            d->target[0] = '\0';
        } else { /* a bare target: everything it logs */
            snprintf(d->target, sizeof d->target, "%s", part);
            level = ZKM_LOG_TRACE;
        }
        if (level < 0)
            continue;
        d->level = level;
        filter.count++;
        if (level > max)
            max = level;
    }
    return max;
}

/* The level allowed for `target`: that of the longest directive it starts with. */
static int allowed(const char *target) {
    int level = ZKM_LOG_ERROR;
    size_t best = 0;
    bool found = false;
    for (size_t i = 0; i < filter.count; i++) {
        const struct directive *d = &filter.directives[i];
        size_t len = strlen(d->target);
        if (strncmp(target, d->target, len) == 0 && (!found || len >= best)) {
            level = d->level;
            best = len;
            found = true;
        }
    }
    return level;
}

static void log_line(int level, const char *target, const char *message) {
    if (level > allowed(target))
        return;
    char stamp[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%SZ", &tm);
    fprintf(stderr, "[%s %-5s %s] %s\n", stamp, LEVEL_NAMES[level], target, message);
}

/* The worker's own lines. */
static void say(int level, const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    log_line(level, "worker", message);
}

/* The library's records (any library thread). */
static void library_log(zkm_log_level level, const char *target, const char *message,
                        void *user_data) {
    (void)user_data;
    log_line((int)level, target, message);
}

/* ---- The script's log lines: one for each change of role or of the masters ---- */

struct change_log {
    bool seen, master;
    char masters[4096];
};

/* Runs on the library's callback thread, one change at a time. */
static void on_change(const zkm_role_change *change, void *user_data) {
    struct change_log *log = user_data;
    bool master = change->new_role == ZKM_ROLE_MASTER;
    char masters[sizeof log->masters] = "";
    size_t used = 0;
    for (size_t i = 0; i < change->masters_len && used < sizeof masters; i++)
        used += (size_t)snprintf(masters + used, sizeof masters - used, "%s%s", i ? ", " : "",
                                 change->masters[i].name);
    if (log->seen && log->master == master && strcmp(log->masters, masters) == 0)
        return;
    if (master)
        say(ZKM_LOG_INFO, "I've become master!");
    else
        say(ZKM_LOG_INFO, "[%s] is masters, I'm %s", masters,
            change->new_role == ZKM_ROLE_SLAVE ? "slave" : "offline");
    log->seen = true;
    log->master = master;
    memcpy(log->masters, masters, sizeof masters);
}

/* ---- --trace-roles ---- */

static uint64_t monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct role_trace {
    FILE *file;
    bool master;        /* whether the last read returned true */
    char member[256];   /* while master: the member it was for */
    uint64_t last_true; /* while master: when that read ended */
};

static void trace_line(struct role_trace *trace, const char *format, ...) {
    va_list args;
    va_start(args, format);
    vfprintf(trace->file, format, args);
    va_end(args);
    if (fflush(trace->file) != 0)
        say(ZKM_LOG_ERROR, "cannot write the role trace: %s", strerror(errno));
}

/* Reads zkm_is_master() once and records a change. */
static void trace_poll(struct role_trace *trace, const zkm_election *election) {
    uint64_t before = monotonic_ns();
    bool master = zkm_is_master(election);
    uint64_t after = monotonic_ns();
    if (!master) {
        if (trace->master)
            trace_line(trace, "%" PRIu64 " %s slave %" PRIu64 "\n", before, trace->member,
                       trace->last_true);
        trace->master = false;
        return;
    }
    char name[256] = "?";
    zkm_snapshot *snapshot = NULL;
    if (zkm_snapshot_take(election, &snapshot) == ZKM_OK && snapshot->member)
        snprintf(name, sizeof name, "%s", snapshot->member);
    zkm_snapshot_free(snapshot);
    if (trace->master && strcmp(trace->member, name) == 0) {
        trace->last_true = after;
        return;
    }
    if (trace->master)
        trace_line(trace, "%" PRIu64 " %s slave %" PRIu64 "\n", before, trace->member,
                   trace->last_true);
    trace_line(trace, "%" PRIu64 " %s master\n", before, name);
    trace->master = true;
    snprintf(trace->member, sizeof trace->member, "%s", name);
    trace->last_true = after;
}

/* At exit: a member still master steps down now. */
static void trace_finish(struct role_trace *trace) {
    if (trace->master)
        trace_line(trace, "%" PRIu64 " %s slave %" PRIu64 "\n", monotonic_ns(), trace->member,
                   trace->last_true);
    trace->master = false;
}

/* ---- Flags ---- */

/* A whole number as Rust's u64 parse takes it: an optional '+', then only digits. */
static bool whole_number(const char *text, uint64_t *out) {
    const char *p = text[0] == '+' ? text + 1 : text;
    if (*p == '\0')
        return false;
    uint64_t n = 0;
    for (; *p; p++) {
        if (*p < '0' || *p > '9' || n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10)
            return false;
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *out = n;
    return true;
}

static void bad_flags(const char *format, ...) {
    va_list args;
    va_start(args, format);
    vfprintf(stderr, format, args);
    va_end(args);
    fprintf(stderr, "\n%s\n", USAGE);
    exit(2);
}

/* The configuration library's own message for a refused value, as the Rust worker prints it. */
static void check(zkm_result rc) {
    if (rc != ZKM_OK)
        bad_flags("%s", zkm_last_error());
}

struct flags {
    const char *connect, *group, *auth, *data, *trace;
    uint64_t masters, timeout_ms, margin_ms;
    bool margin;
};

/* Parses the flags as examples/worker.rs does; returns NULL after --help. */
static zkm_config *parse_args(int argc, char **argv, struct flags *f) {
    *f = (struct flags){.connect = "127.0.0.1:2181", .group = "/Roles/workers", .data = "1",
                        .masters = 1, .timeout_ms = 10000};
    for (int i = 1; i < argc; i++) {
        const char *flag = argv[i];
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0)
            return NULL;
        static const char *const known[] = {"--connect", "--group", "--masters",
                                            "--session-timeout-ms", "--lease-margin-ms",
                                            "--auth", "--data", "--trace-roles"};
        bool is_known = false;
        for (size_t k = 0; k < sizeof known / sizeof *known; k++)
            is_known = is_known || strcmp(flag, known[k]) == 0;
        if (!is_known)
            bad_flags("unknown flag %s", flag);
        if (i + 1 >= argc)
            bad_flags("%s needs a value", flag);
        const char *value = argv[++i];
        uint64_t *number = strcmp(flag, "--masters") == 0              ? &f->masters
                           : strcmp(flag, "--session-timeout-ms") == 0 ? &f->timeout_ms
                           : strcmp(flag, "--lease-margin-ms") == 0    ? &f->margin_ms
                                                                       : NULL;
        if (number && !whole_number(value, number))
            bad_flags("%s takes a whole number, not \"%s\"", flag, value);
        if (strcmp(flag, "--connect") == 0)
            f->connect = value;
        else if (strcmp(flag, "--group") == 0)
            f->group = value;
        else if (strcmp(flag, "--lease-margin-ms") == 0)
            f->margin = true;
        else if (strcmp(flag, "--auth") == 0)
            f->auth = value;
        else if (strcmp(flag, "--data") == 0)
            f->data = value;
        else if (strcmp(flag, "--trace-roles") == 0)
            f->trace = value;
    }
    /* In the order Rust's Config::validate checks the fields, so that the first bad one is
     * the one both workers name. */
    zkm_config *config = NULL;
    check(zkm_config_new(f->connect, &config));
    check(zkm_config_set_group(config, f->group));
    check(zkm_config_set_masters(config, (size_t)f->masters));
    check(zkm_config_set_session_timeout_ms(config, f->timeout_ms));
    if (f->margin)
        check(zkm_config_set_lease_margin_ms(config, f->margin_ms));
    check(zkm_config_validate(config)); /* the margin against the timeout */
    if (f->auth)
        check(zkm_config_set_auth(config, f->auth));
    check(zkm_config_set_data(config, (const uint8_t *)f->data, strlen(f->data)));
    check(zkm_config_validate(config));
    return config;
}

int main(int argc, char **argv) {
    const char *spec = getenv("RUST_LOG");
    int max_level = parse_filter(spec && *spec ? spec : "info,zookeeper=warn");
    struct flags flags;
    zkm_config *config = parse_args(argc, argv, &flags);
    if (!config) {
        fputs(HELP, stdout);
        return 0;
    }
    zkm_set_logger(library_log, NULL, max_level);
    /* Blocked before joining, so that every library thread inherits the mask and a signal that
     * comes during the join waits for sigwait below. */
    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    struct role_trace trace = {0};
    if (flags.trace && !(trace.file = fopen(flags.trace, "a"))) {
        say(ZKM_LOG_ERROR, "cannot open the role trace: %s", strerror(errno));
        zkm_config_free(config);
        return 1;
    }
    zkm_election *election = NULL;
    if (zkm_join(config, &election) != ZKM_OK) {
        say(ZKM_LOG_ERROR, "cannot join: %s", zkm_last_error());
        zkm_config_free(config);
        if (trace.file)
            fclose(trace.file);
        return 1;
    }
    zkm_config_free(config);
    zkm_snapshot *joined = NULL;
    if (zkm_snapshot_take(election, &joined) == ZKM_OK)
        say(ZKM_LOG_INFO, "register ok! I'm %s", joined->member ? joined->member : "");
    zkm_snapshot_free(joined);
    /* Told the role held now at once, then every change, in order. */
    struct change_log change_log = {0};
    uint64_t callback = 0;
    zkm_on_change(election, on_change, &change_log, &callback);

    if (!trace.file) {
        /* Asleep until a signal: no polling, no CPU while idle. */
        int sig;
        sigwait(&stop, &sig);
    } else {
        /* The fault tests' mode: every change of zkm_is_master() as it happens. */
        const struct timespec every = {0, 1000000}, now = {0, 0};
        while (sigtimedwait(&stop, NULL, &now) < 0) {
            trace_poll(&trace, election);
            nanosleep(&every, NULL);
        }
        /* No read after the loop: the last one that returned true is the last master moment. */
        trace_finish(&trace);
        fclose(trace.file);
    }
    /* Quiet from here, as the Rust worker, which stops reading changes at the signal. Once it
     * returns, the callback is not running and never runs again. */
    zkm_callback_remove(election, callback);
    zkm_resign(election);
    say(ZKM_LOG_INFO, "resigned; my node is deleted");
    zkm_election_free(election);
    return 0;
}
