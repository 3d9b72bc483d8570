/*
 * pause: the process that holds a pod's namespaces (the CRI "sandbox" container).
 * Sleeps in pause(), reaps any child it inherits, exits 0 on SIGINT or SIGTERM.
 * Built static (gcc -static -Os) by test/setup.sh into the image localhost/pause:latest.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void on_child(int sig)
{
	int saved = errno;

	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	errno = saved;
}

static int handle(int sig, void (*fn)(int))
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = fn;
	sa.sa_flags = SA_RESTART;
	sigemptyset(&sa.sa_mask);
	return sigaction(sig, &sa, NULL);
}

int main(void)
{
	static const char msg[] = "pause: cannot install signal handlers\n";

	if (handle(SIGINT, on_stop) || handle(SIGTERM, on_stop) || handle(SIGCHLD, on_child)) {
		(void)!write(2, msg, sizeof(msg) - 1);
		return 1;
	}
	for (;;)
		pause();
}
