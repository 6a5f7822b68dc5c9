/* Internals shared by the imapc_*.c files. */
#ifndef MAILREPL_IMAPC_PRIVATE_H
#define MAILREPL_IMAPC_PRIVATE_H
#endif
