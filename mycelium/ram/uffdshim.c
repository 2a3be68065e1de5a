/* LD_PRELOAD into QEMU: create a userfaultfd in QEMU's mm and leave it at fd MYC_UFFD_FD, so the
   node (pidfd_getfd) can register guest RAM for async write-protect tracking from outside. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>
__attribute__((constructor)) static void myc_uffd(void) {
    const char *want = getenv("MYC_UFFD_FD");
    if (!want) return;
    int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return;
    int target = atoi(want);
    if (fd != target) { dup3(fd, target, O_CLOEXEC); close(fd); }
    unsetenv("LD_PRELOAD");
}
