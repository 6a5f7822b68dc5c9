/* mailrepl: the command-line tool. */
#include <config.h>

#include <stdio.h>

int
main(int argc, char **argv)
{
	fprintf(stderr, "mailrepl: not built yet\n");
	return 1;
}
