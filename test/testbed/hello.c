/* The Kubernetes test bed's "scratch" image: one static binary, no shell, no libc in the image.
 * `hello` prints a line and exits 0 (an init container's whole job); `hello sleep` waits for
 * SIGTERM or SIGINT and exits 0 (a long-running container). Built with gcc -Os -static. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void done(int sig) { (void)sig; _exit(0); }

int main(int argc, char **argv) {
  if (argc > 1 && strcmp(argv[1], "sleep") == 0) {
    signal(SIGTERM, done);
    signal(SIGINT, done);
    for (;;) pause();
  }
  puts("hello from a shell-less image");
  return 0;
}
