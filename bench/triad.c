/* STREAM-like triad a[i] = b[i] + s * c[i] over arrays far larger than the caches.
 * Reports the best and median bandwidth over the repetitions, counting 3 x 8 bytes per element
 * (two reads and one write; like STREAM, write-allocate traffic is not counted).
 * Usage: triad [megabytes per array] [repetitions]; threads from OMP_NUM_THREADS. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp(const void *x, const void *y) {
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

int main(int argc, char **argv) {
    long mb = argc > 1 ? atol(argv[1]) : 256;
    int reps = argc > 2 ? atoi(argv[2]) : 10;
    if (mb < 1 || reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: triad [MB per array >= 1] [repetitions 1..1000]\n");
        return 2;
    }
    long n = mb * 1024 * 1024 / sizeof(double);
    double *a = malloc(n * sizeof(double)), *b = malloc(n * sizeof(double)), *c = malloc(n * sizeof(double));
    double *gbs = malloc(reps * sizeof(double));
    if (!a || !b || !c || !gbs) {
        fprintf(stderr, "triad: out of memory\n");
        return 1;
    }
    /* first touch in parallel so pages land where the threads run */
#pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) { a[i] = 0; b[i] = 1; c[i] = 2; }
    const double s = 3.0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
#pragma omp parallel for schedule(static)
        for (long i = 0; i < n; i++) a[i] = b[i] + s * c[i];
        double dt = now() - t0;
        gbs[r] = 3.0 * n * sizeof(double) / dt / 1e9;
    }
    double check = 0;
    for (long i = 0; i < n; i += 4096) check += a[i];
    double sorted[1000];
    for (int r = 0; r < reps; r++) sorted[r] = gbs[r];
    qsort(sorted, reps, sizeof(double), cmp);
    printf("{\"threads\": %d, \"mb_per_array\": %ld, \"reps\": %d, \"best_gbs\": %.3f, \"median_gbs\": %.3f, \"check\": %.1f}\n",
           omp_get_max_threads(), mb, reps, sorted[reps - 1], sorted[reps / 2], check);
    return 0;
}
