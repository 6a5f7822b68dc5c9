#ifndef MAILREPL_SYNC_H
#define MAILREPL_SYNC_H
#endif
