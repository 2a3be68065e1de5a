/* The Endophyte test guest's workload: a memory writer with its own integrity check, and a TCP responder.
 *
 * It keeps NPAGES pages; page i always holds (i, gen[i], pattern(i, gen[i])) and the table gen[] lives in
 * memory too. The writer bumps gen[i] and rewrites page i at a steady rate. Any page a migration failed to
 * copy (stale), copied torn, or corrupted no longer matches the table: a full verification pass finds it.
 * Port 7000 answers one line per connection:
 *   "ping"  -> "pong <seq> <writes> <errors> <mono_ms> <real_ms>"
 *   "check" -> a full verification pass first, then "check <ok|BAD> <writes> <errors> <first_bad> <pages>"
 * Single-threaded, so the writer and the checker never race. Parameters from /proc/cmdline:
 * mw.mib=N (memory, default 16), mw.rate=N (pages written per second, default 2000). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
static uint64_t *gen;
static unsigned char *mem;
static size_t npages;
static unsigned long long writes, errors, seq;
static long long first_bad = -1;

static uint64_t mix(uint64_t x) { x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL; return x ^ (x >> 33); }
static void fill(size_t i) {
  uint64_t *p = (uint64_t *)(mem + i * PAGE), s = mix(i * 0x9e3779b97f4a7c15ULL ^ gen[i]);
  p[0] = i; p[1] = gen[i];
  for (size_t k = 2; k < PAGE / 8; k++) { s = mix(s + k); p[k] = s; }
}
static int verify(size_t i) {
  uint64_t *p = (uint64_t *)(mem + i * PAGE), s = mix(i * 0x9e3779b97f4a7c15ULL ^ gen[i]);
  if (p[0] != i || p[1] != gen[i]) return 0;
  for (size_t k = 2; k < PAGE / 8; k++) { s = mix(s + k); if (p[k] != s) return 0; }
  return 1;
}
static int check_all(void) {
  int ok = 1;
  for (size_t i = 0; i < npages; i++) if (!verify(i)) { ok = 0; errors++; if (first_bad < 0) first_bad = (long long)i; }
  return ok;
}
static long long ms(clockid_t c) { struct timespec t; clock_gettime(c, &t); return t.tv_sec * 1000LL + t.tv_nsec / 1000000; }
static long param(const char *cmd, const char *key, long dflt) {
  const char *p = strstr(cmd, key);
  return p ? strtol(p + strlen(key), NULL, 10) : dflt;
}

int main(void) {
  char cmd[4096] = {0};
  FILE *f = fopen("/proc/cmdline", "r");
  if (f) { if (!fgets(cmd, sizeof cmd, f)) cmd[0] = 0; fclose(f); }
  long mib = param(cmd, "mw.mib=", 16), rate = param(cmd, "mw.rate=", 2000);
  npages = (size_t)mib * 1024 * 1024 / PAGE;
  mem = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
  gen = calloc(npages, sizeof *gen);
  if (mem == MAP_FAILED || !gen) { printf("memwriter: out of memory\n"); return 1; }
  for (size_t i = 0; i < npages; i++) fill(i);
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(7000), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, 16)) { perror("memwriter: listen"); return 1; }
  printf("memwriter: ready pages=%zu rate=%ld\n", npages, rate);
  fflush(stdout);
  size_t cursor = 0;
  long long last = ms(CLOCK_MONOTONIC), report = last;
  double due = 0;
  for (;;) {
    struct pollfd pfd = {.fd = ls, .events = POLLIN};
    if (poll(&pfd, 1, 1) > 0) {
      int c = accept(ls, NULL, NULL);
      if (c >= 0) {
        char req[64] = {0}, out[256];
        struct pollfd rp = {.fd = c, .events = POLLIN};
        if (poll(&rp, 1, 2000) > 0 && read(c, req, sizeof req - 1) > 0) {
          int n;
          if (!strncmp(req, "check", 5)) {
            int ok = check_all();
            n = snprintf(out, sizeof out, "check %s %llu %llu %lld %zu\n", ok ? "ok" : "BAD", writes, errors, first_bad, npages);
          } else {
            n = snprintf(out, sizeof out, "pong %llu %llu %llu %lld %lld\n", ++seq, writes, errors, ms(CLOCK_MONOTONIC), ms(CLOCK_REALTIME));
          }
          if (write(c, out, n) < 0) { /* the prober went away: nothing to do */ }
        }
        close(c);
      }
    }
    long long now = ms(CLOCK_MONOTONIC);
    due += (double)(now - last) * rate / 1000.0;
    if (due > rate) due = rate; /* after a pause (migration downtime) do not burst more than 1 s of writes */
    last = now;
    while (due >= 1) { gen[cursor]++; fill(cursor); writes++; cursor = (cursor + 1) % npages; due -= 1; }
    if (now - report >= 5000) { report = now; printf("memwriter: writes=%llu errors=%llu\n", writes, errors); fflush(stdout); }
  }
}
