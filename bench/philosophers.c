/* Dining philosophers with processes on glibc's process-shared sem_t: the C baseline that
 * `mman philosophers` is compared with (bench/philosophers.sh). Same table as mman's: the
 * forks are semaphores in a file mapped MAP_SHARED, each philosopher takes the lower-
 * numbered fork first, a meal is a counter increment, the dinner lasts a fixed time.
 *
 * usage: philosophers N SECONDS FILE      prints: meals_per_s total_meals min max
 */
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A fork or a meal counter takes a cache line of its own, as in mman's table. */
struct fork {
    sem_t sem;
    char pad[64 - sizeof(sem_t)];
};

/* The gate: the children and the parent meet at it once all are started, and the clock
 * starts then, as in mman's dinner (whose processes take longer to start). */
struct table {
    atomic_int stop;
    char pad[28];
    pthread_barrier_t gate;
    struct fork forks[];
};
_Static_assert(sizeof(struct table) == 64, "the forks start on the second cache line");

/* A child that ends before the gate opens keeps it shut for good (a pthread barrier has no
 * timeout): end the dinner then; the children die with the parent (PR_SET_PDEATHSIG). */
static void gate_broken(int sig) {
    (void)sig;
    static const char msg[] = "philosophers: a philosopher ended before the dinner started\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s N SECONDS FILE\n", argv[0]);
        return 2;
    }
    int n = atoi(argv[1]);
    double secs = atof(argv[2]);
    size_t size = sizeof(struct table) + n * sizeof(struct fork) + n * 64;
    int fd = open(argv[3], O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || ftruncate(fd, size) != 0) {
        perror(argv[3]);
        return 1;
    }
    struct table *t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (t == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    close(fd);
    volatile unsigned long *meals = (unsigned long *)((char *)t + sizeof(struct table) + n * sizeof(struct fork));
    for (int i = 0; i < n; i++)
        sem_init(&t->forks[i].sem, 1, 1);
    pthread_barrierattr_t shared;
    pthread_barrierattr_init(&shared);
    pthread_barrierattr_setpshared(&shared, PTHREAD_PROCESS_SHARED);
    pthread_barrier_init(&t->gate, &shared, n + 1);
    pid_t *pids = calloc(n, sizeof(pid_t));
    pid_t parent = getpid();
    signal(SIGCHLD, gate_broken);
    for (int i = 0; i < n; i++) {
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 1; /* the children started die with the parent */
        }
        if (pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(1);
            int a = i, b = (i + 1) % n;
            sem_t *first = &t->forks[a < b ? a : b].sem, *second = &t->forks[a < b ? b : a].sem;
            unsigned long mine = 0;
            pthread_barrier_wait(&t->gate);
            while (!atomic_load_explicit(&t->stop, memory_order_relaxed)) {
                sem_wait(first);
                sem_wait(second);
                meals[8 * i] = ++mine;
                sem_post(second);
                sem_post(first);
            }
            _exit(0);
        }
        pids[i] = pid;
    }
    pthread_barrier_wait(&t->gate);
    signal(SIGCHLD, SIG_DFL);
    double start = now();
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&t->stop, 1);
    double elapsed = now() - start;
    unsigned long total = 0, min = (unsigned long)-1, max = 0;
    for (int i = 0; i < n; i++) {
        unsigned long m = meals[8 * i];
        total += m;
        if (m < min) min = m;
        if (m > max) max = m;
    }
    usleep(100000);
    for (int i = 0; i < n; i++) {
        kill(pids[i], SIGKILL);
        waitpid(pids[i], NULL, 0);
    }
    printf("%.0f %lu %lu %lu\n", total / elapsed, total, min, max);
    return 0;
}
