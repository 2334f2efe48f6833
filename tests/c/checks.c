/*
 * The C API's promises, checked from C against a real server (tests/c_api.rs runs it, once
 * plainly and once under valgrind): NULL arguments give ZKM_ERR_NULL, bad input its code and a
 * message, snapshots outlive their election, callbacks may call back into the API (even resign),
 * freeing an election from its own callback is refused, ids are checked.
 *
 * usage: checks HOST:PORT [--valgrind]
 *   exits 0 and prints "all checks passed" when every check holds; --valgrind leaves out the
 *   join to an unreachable server (its threads outlive the process, see unreachable()).
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zk_master.h"

static int failures;

#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (cond)                                                                              \
            printf("ok: %s\n", #cond);                                                         \
        else {                                                                                 \
            printf("FAILED line %d: %s (last error: %s)\n", __LINE__, #cond, zkm_last_error()); \
            failures++;                                                                        \
        }                                                                                      \
    } while (0)

/* What callbacks tell the main thread, under `lock`. */
struct seen {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    zkm_election *election;
    uint64_t id;
    int calls;
    int masters_seen;
    zkm_result free_rc;   /* zkm_election_free from inside the callback */
    zkm_result remove_rc; /* the callback removing itself */
    zkm_result resign_rc; /* zkm_resign from inside the callback */
    int snapshot_ok;      /* a snapshot taken from inside the callback */
    int log_records;
};

static struct seen new_seen(void) {
    struct seen s;
    memset(&s, 0, sizeof s);
    pthread_mutex_init(&s.lock, NULL);
    pthread_cond_init(&s.changed, NULL);
    s.free_rc = s.remove_rc = s.resign_rc = ZKM_OK;
    return s;
}

/* Waits (at most 10 s) until `*counter` reaches `n`. */
static int wait_for(struct seen *s, int *counter, int n) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 10;
    pthread_mutex_lock(&s->lock);
    while (*counter < n && pthread_cond_timedwait(&s->changed, &s->lock, &deadline) == 0) {
    }
    int reached = *counter >= n;
    pthread_mutex_unlock(&s->lock);
    return reached;
}

/* Counts an observer's changes, and the members the last one showed. */
static void on_observed(const zkm_role_change *change, void *user_data) {
    struct seen *s = user_data;
    pthread_mutex_lock(&s->lock);
    s->calls++;
    s->masters_seen = (int)change->members_len; /* here: the members it was told of */
    if (change->new_role != ZKM_ROLE_OFFLINE || change->member != NULL)
        s->snapshot_ok = -1;
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* Calls back into the API; once master, tries to free its own election and removes itself. */
static void on_change_reentrant(const zkm_role_change *change, void *user_data) {
    struct seen *s = user_data;
    zkm_snapshot *snapshot = NULL;
    int snapshot_ok = zkm_snapshot_take(s->election, &snapshot) == ZKM_OK &&
                      snapshot->members_len == change->members_len;
    zkm_snapshot_free(snapshot);
    (void)zkm_is_master(s->election);
    pthread_mutex_lock(&s->lock);
    s->calls++;
    s->snapshot_ok += snapshot_ok;
    if (change->new_role == ZKM_ROLE_MASTER) {
        s->free_rc = zkm_election_free(s->election);
        s->remove_rc = zkm_callback_remove(s->election, s->id);
        s->masters_seen++;
    }
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

/* Resigns its election from inside its first call. */
static void on_change_resign(const zkm_role_change *change, void *user_data) {
    struct seen *s = user_data;
    (void)change;
    pthread_mutex_lock(&s->lock);
    int first = s->calls++ == 0;
    pthread_mutex_unlock(&s->lock);
    zkm_result rc = first ? zkm_resign(s->election) : ZKM_OK;
    pthread_mutex_lock(&s->lock);
    if (first)
        s->resign_rc = rc;
    s->masters_seen = 1; /* done */
    pthread_cond_broadcast(&s->changed);
    pthread_mutex_unlock(&s->lock);
}

static void count_records(zkm_log_level level, const char *target, const char *message,
                          void *user_data) {
    struct seen *s = user_data;
    (void)level, (void)target, (void)message;
    pthread_mutex_lock(&s->lock);
    s->log_records++;
    pthread_mutex_unlock(&s->lock);
}

static void null_arguments(void) {
    zkm_config *config = NULL;
    zkm_election *election = NULL;
    zkm_snapshot *snapshot = NULL;
    uint64_t token = 0;
    CHECK(zkm_config_new(NULL, &config) == ZKM_ERR_NULL && config == NULL);
    CHECK(strcmp(zkm_last_error(), "connect is NULL") == 0);
    CHECK(zkm_config_new("127.0.0.1:2181", NULL) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_group(NULL, "/g") == ZKM_ERR_NULL);
    CHECK(zkm_config_set_prefix(NULL, "p") == ZKM_ERR_NULL);
    CHECK(zkm_config_set_masters(NULL, 1) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_session_timeout_ms(NULL, 1000) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_connect_timeout_ms(NULL, 1000) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_lease_margin_ms(NULL, 100) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_data(NULL, (const uint8_t *)"x", 1) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_auth(NULL, "u:p") == ZKM_ERR_NULL);
    CHECK(zkm_config_set_readable_by_anyone(NULL, true) == ZKM_ERR_NULL);
    CHECK(zkm_config_validate(NULL) == ZKM_ERR_NULL);
    CHECK(zkm_join(NULL, &election) == ZKM_ERR_NULL && election == NULL);
    CHECK(!zkm_is_master(NULL));
    CHECK(zkm_role_of(NULL) == ZKM_ROLE_OFFLINE);
    CHECK(zkm_fencing_token(NULL, &token) == ZKM_ERR_NULL);
    zkm_metrics metrics;
    CHECK(zkm_election_metrics(NULL, &metrics) == ZKM_ERR_NULL);
    zkm_observer *observer = NULL;
    CHECK(zkm_observer_watch(NULL, &observer) == ZKM_ERR_NULL && observer == NULL);
    CHECK(zkm_observer_snapshot_take(NULL, &snapshot) == ZKM_ERR_NULL);
    CHECK(zkm_observer_on_change(NULL, on_observed, NULL, NULL) == ZKM_ERR_NULL);
    CHECK(zkm_observer_callback_remove(NULL, 1) == ZKM_ERR_NULL);
    CHECK(zkm_observer_free(NULL) == ZKM_OK);
    CHECK(zkm_snapshot_take(NULL, &snapshot) == ZKM_ERR_NULL && snapshot == NULL);
    CHECK(zkm_requeue(NULL) == ZKM_ERR_NULL);
    CHECK(zkm_resign(NULL) == ZKM_ERR_NULL);
    CHECK(zkm_on_change(NULL, on_change_resign, NULL, NULL) == ZKM_ERR_NULL);
    CHECK(zkm_callback_remove(NULL, 1) == ZKM_ERR_NULL);
    CHECK(zkm_election_free(NULL) == ZKM_OK);
    zkm_config_free(NULL);
    zkm_snapshot_free(NULL);

    CHECK(zkm_config_new("127.0.0.1:2181", &config) == ZKM_OK);
    CHECK(zkm_config_set_group(config, NULL) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_data(config, NULL, 1) == ZKM_ERR_NULL);
    CHECK(zkm_config_set_data(config, NULL, 0) == ZKM_OK);
    CHECK(zkm_join(config, NULL) == ZKM_ERR_NULL);
    zkm_config_free(config);
}

static void bad_input(void) {
    zkm_config *config = NULL;
    CHECK(zkm_config_new("no-port", &config) == ZKM_ERR_INVALID_CONFIG && config == NULL);
    CHECK(strstr(zkm_last_error(), "connect") != NULL);
    CHECK(zkm_config_new("127.0.0.1:2181\xff", &config) == ZKM_ERR_INVALID_ARGUMENT);
    CHECK(zkm_config_new("127.0.0.1:2181", &config) == ZKM_OK);
    CHECK(zkm_config_set_group(config, "relative") == ZKM_ERR_INVALID_CONFIG);
    CHECK(strstr(zkm_last_error(), "group") != NULL);
    CHECK(zkm_config_set_group(config, "/zookeeper/x") == ZKM_ERR_INVALID_CONFIG);
    CHECK(zkm_config_set_prefix(config, "a/b") == ZKM_ERR_INVALID_CONFIG);
    CHECK(zkm_config_set_masters(config, 0) == ZKM_ERR_INVALID_CONFIG);
    CHECK(zkm_config_set_session_timeout_ms(config, 0) == ZKM_ERR_INVALID_CONFIG);
    CHECK(zkm_config_set_connect_timeout_ms(config, 0) == ZKM_ERR_INVALID_CONFIG);
    CHECK(zkm_config_set_auth(config, "user-without-password") == ZKM_ERR_INVALID_CONFIG);
    uint8_t *big = calloc(ZKM_MAX_DATA_LEN + 1, 1);
    CHECK(zkm_config_set_data(config, big, ZKM_MAX_DATA_LEN + 1) == ZKM_ERR_INVALID_CONFIG);
    CHECK(zkm_config_set_data(config, big, ZKM_MAX_DATA_LEN) == ZKM_OK);
    free(big);
    CHECK(zkm_config_validate(config) == ZKM_OK);
    CHECK(zkm_config_set_session_timeout_ms(config, 1000) == ZKM_OK);
    CHECK(zkm_config_set_lease_margin_ms(config, 1000) == ZKM_OK);
    CHECK(zkm_config_validate(config) == ZKM_ERR_INVALID_CONFIG);
    CHECK(strstr(zkm_last_error(), "lease_margin") != NULL);
    zkm_election *election = NULL;
    CHECK(zkm_join(config, &election) == ZKM_ERR_INVALID_CONFIG && election == NULL);
    zkm_config_free(config);

    CHECK(zkm_set_logger(NULL, NULL, 9) == ZKM_ERR_INVALID_ARGUMENT);
    CHECK(strcmp(zkm_result_name(ZKM_ERR_IN_CALLBACK), "ZKM_ERR_IN_CALLBACK") == 0);
    CHECK(strcmp(zkm_result_name(12345), "ZKM_ERR_UNKNOWN_CODE") == 0);

}

/* Nothing listens on port 1. The abandoned attempt's network threads end on their own, up to
 * 2 x session timeout + 3 s later (see zkm_join): too late for valgrind's leak check at exit. */
static void unreachable(void) {
    zkm_config *config = NULL;
    zkm_election *election = NULL;
    CHECK(zkm_config_new("127.0.0.1:1", &config) == ZKM_OK);
    CHECK(zkm_config_set_connect_timeout_ms(config, 500) == ZKM_OK);
    CHECK(zkm_join(config, &election) == ZKM_ERR_UNREACHABLE && election == NULL);
    CHECK(strstr(zkm_last_error(), "127.0.0.1:1") != NULL);
    zkm_config_free(config);
}

static zkm_election *join(const char *connect, const char *data) {
    zkm_config *config = NULL;
    zkm_election *election = NULL;
    CHECK(zkm_config_new(connect, &config) == ZKM_OK);
    CHECK(zkm_config_set_group(config, "/c-checks") == ZKM_OK);
    CHECK(zkm_config_set_session_timeout_ms(config, 4000) == ZKM_OK);
    CHECK(zkm_config_set_data(config, (const uint8_t *)data, strlen(data)) == ZKM_OK);
    CHECK(zkm_join(config, &election) == ZKM_OK && election != NULL);
    zkm_config_free(config);
    return election;
}

static void elections(const char *connect) {
    static struct seen logs;
    logs = new_seen();
    CHECK(zkm_set_logger(count_records, &logs, ZKM_LOG_DEBUG) == ZKM_OK);
    zkm_election *first = join(connect, "first");
    if (!first)
        return;
    CHECK(zkm_is_master(first) && zkm_role_of(first) == ZKM_ROLE_MASTER);
    uint64_t token = 0;
    CHECK(zkm_fencing_token(first, &token) == ZKM_OK && token > 0);
    CHECK(zkm_fencing_token(first, NULL) == ZKM_ERR_NULL);
    CHECK(zkm_snapshot_take(first, NULL) == ZKM_ERR_NULL);
    zkm_metrics metrics;
    CHECK(zkm_election_metrics(first, &metrics) == ZKM_OK);
    CHECK(metrics.is_master && metrics.role_transitions >= 1 && metrics.session_losses == 0);
    CHECK(metrics.session_timeout_ms == 4000 && metrics.ms_since_last_renewal >= 0);
    CHECK(zkm_election_metrics(first, NULL) == ZKM_ERR_NULL);

    /* An observer follows the group without joining it. */
    zkm_config *watch_config = NULL;
    zkm_observer *observer = NULL;
    CHECK(zkm_config_new(connect, &watch_config) == ZKM_OK);
    CHECK(zkm_config_set_group(watch_config, "/c-checks") == ZKM_OK);
    CHECK(zkm_observer_watch(watch_config, &observer) == ZKM_OK && observer != NULL);
    zkm_config_free(watch_config);
    zkm_snapshot *watched = NULL;
    CHECK(zkm_observer_snapshot_take(observer, &watched) == ZKM_OK);
    CHECK(watched->members_len == 1 && watched->masters_len == 1 && watched->member == NULL);
    CHECK(watched->role == ZKM_ROLE_OFFLINE && !watched->has_fencing_token);
    CHECK(watched->masters[0].data_len == 5 &&
          memcmp(watched->masters[0].data, "first", 5) == 0);
    zkm_snapshot_free(watched);
    CHECK(zkm_observer_snapshot_take(observer, NULL) == ZKM_ERR_NULL);
    struct seen observed = new_seen();
    uint64_t observed_id = 0;
    CHECK(zkm_observer_on_change(observer, NULL, &observed, NULL) == ZKM_ERR_NULL);
    CHECK(zkm_observer_on_change(observer, on_observed, &observed, &observed_id) == ZKM_OK);
    CHECK(observed_id != 0 && wait_for(&observed, &observed.calls, 1)); /* the group now */

    zkm_election *second = join(connect, "second");
    if (!second)
        return;
    CHECK(wait_for(&observed, &observed.masters_seen, 2)); /* told of the newcomer */
    CHECK(observed.snapshot_ok == 0);
    CHECK(zkm_observer_callback_remove(observer, observed_id) == ZKM_OK);
    CHECK(zkm_observer_callback_remove(observer, observed_id) == ZKM_ERR_UNKNOWN_CALLBACK);
    CHECK(zkm_observer_free(observer) == ZKM_OK);
    CHECK(!zkm_is_master(second) && zkm_role_of(second) == ZKM_ROLE_SLAVE);
    CHECK(zkm_fencing_token(second, &token) == ZKM_ERR_NOT_MASTER);
    zkm_snapshot *s = NULL;
    CHECK(zkm_snapshot_take(second, &s) == ZKM_OK);
    CHECK(s->role == ZKM_ROLE_SLAVE && s->connection == ZKM_CONNECTION_CONNECTED);
    CHECK(s->members_len == 2 && s->masters_len == 1 && !s->has_fencing_token);
    CHECK(strcmp(s->members[1].name, s->member) == 0);
    CHECK(s->members[0].data_len == 5 && strcmp((const char *)s->members[0].data, "first") == 0);
    CHECK(strcmp(s->masters[0].name, s->members[0].name) == 0);
    CHECK(s->members[0].sequence < s->members[1].sequence && s->session_timeout_ms > 0);

    /* The slave's callback calls back into the API; when it becomes master it tries to free its
     * own election (refused) and removes itself. */
    struct seen seen = new_seen();
    seen.election = second;
    CHECK(zkm_on_change(second, NULL, &seen, NULL) == ZKM_ERR_NULL);
    CHECK(zkm_on_change(second, on_change_reentrant, &seen, &seen.id) == ZKM_OK && seen.id != 0);
    CHECK(wait_for(&seen, &seen.calls, 1)); /* the role held now */
    CHECK(zkm_requeue(first) == ZKM_OK);
    CHECK(wait_for(&seen, &seen.masters_seen, 1));
    CHECK(seen.free_rc == ZKM_ERR_IN_CALLBACK);
    CHECK(seen.remove_rc == ZKM_OK);
    CHECK(seen.snapshot_ok == seen.calls);
    CHECK(zkm_is_master(second));
    CHECK(zkm_callback_remove(second, seen.id) == ZKM_ERR_UNKNOWN_CALLBACK);
    CHECK(zkm_callback_remove(second, 999999) == ZKM_ERR_UNKNOWN_CALLBACK);

    /* A callback may resign its own election. */
    struct seen resigner = new_seen();
    resigner.election = first;
    CHECK(zkm_on_change(first, on_change_resign, &resigner, NULL) == ZKM_OK);
    CHECK(wait_for(&resigner, &resigner.masters_seen, 1));
    CHECK(resigner.resign_rc == ZKM_OK);
    CHECK(zkm_requeue(first) == ZKM_ERR_RESIGNED);
    CHECK(!zkm_is_master(first) && zkm_role_of(first) == ZKM_ROLE_OFFLINE);

    /* A snapshot outlives its election. */
    CHECK(zkm_election_free(second) == ZKM_OK);
    CHECK(strcmp((const char *)s->members[1].data, "second") == 0);
    zkm_snapshot_free(s);
    CHECK(zkm_election_free(first) == ZKM_OK);
    pthread_mutex_lock(&logs.lock);
    int records = logs.log_records;
    pthread_mutex_unlock(&logs.lock);
    CHECK(records > 0);
    CHECK(zkm_set_logger(NULL, NULL, ZKM_LOG_OFF) == ZKM_OK);
}

int main(int argc, char **argv) {
    bool under_valgrind = argc == 3 && strcmp(argv[2], "--valgrind") == 0;
    if (argc != 2 && !under_valgrind) {
        fprintf(stderr, "usage: checks HOST:PORT [--valgrind]\n");
        return 2;
    }
    null_arguments();
    bad_input();
    if (!under_valgrind)
        unreachable();
    elections(argv[1]);
    if (failures) {
        printf("%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
