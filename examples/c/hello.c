/* hello.c: joins /Roles/hello, says when it becomes master, and leaves after a minute. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "zk_master.h"

/* Called on a library thread, once with the role held now, then on every change. */
static void on_change(const zkm_role_change *change, void *user_data) {
    (void)user_data;
    if (change->new_role == ZKM_ROLE_MASTER)
        printf("I've become master!\n");
    else if (change->new_role == ZKM_ROLE_SLAVE && change->masters_len > 0)
        printf("[%s] is masters, I'm slave\n", change->masters[0].name);
    fflush(stdout);
}

int main(int argc, char **argv) {
    const char *hosts = argc > 1 ? argv[1] : "127.0.0.1:2181";
    int seconds = argc > 2 ? atoi(argv[2]) : 60;
    zkm_config *config = NULL;
    zkm_election *election = NULL;
    if (zkm_config_new(hosts, &config) != ZKM_OK ||
        zkm_config_set_group(config, "/Roles/hello") != ZKM_OK ||
        zkm_join(config, &election) != ZKM_OK) {
        fprintf(stderr, "cannot join: %s\n", zkm_last_error());
        zkm_config_free(config);
        return 1;
    }
    zkm_config_free(config); /* the election keeps a copy */
    zkm_on_change(election, on_change, NULL, NULL);
    for (int i = 0; i < seconds * 10; i++) {
        if (zkm_is_master(election)) {
            /* the master's work */
        }
        usleep(100000);
    }
    zkm_election_free(election); /* resigns: the next member takes over at once */
    return 0;
}
