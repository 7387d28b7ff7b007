#!/usr/bin/env python3
"""Connection churn against a running relay, printing its RSS (bench/RESULTS.md "Memory after
connection churn"). Usage: churn.py ORPORT PID TOTAL BATCH — opens BATCH connections to
127.0.0.1:ORPORT (every other one completes a TLS handshake), holds them, closes them all, and
repeats until TOTAL; bounded by 600 s. Loopback only."""
import socket, ssl, sys, time
port=int(sys.argv[1]); pid=int(sys.argv[2]); total=int(sys.argv[3]); batch=int(sys.argv[4])
def rss():
    for l in open(f'/proc/{pid}/status'):
        if l.startswith('VmRSS'): return int(l.split()[1])//1024
ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname=False; ctx.verify_mode=ssl.CERT_NONE
print('rss before', rss(), flush=True)
done=0; t0=time.time()
while done<total and time.time()-t0<600:
    socks=[]
    for i in range(batch):
        try:
            s=socket.create_connection(('127.0.0.1',port),timeout=5)
            if i%2==0:
                s=ctx.wrap_socket(s)  # a full TLS handshake, then idle
            socks.append(s)
        except Exception as e:
            pass
    for s in socks: s.close()
    done+=batch
    if (done//batch)%5==0: print('done',done,'rss',rss(),flush=True)
time.sleep(3)
print('rss after', rss(), flush=True)
time.sleep(27)
print('rss 30 s after', rss(), flush=True)
