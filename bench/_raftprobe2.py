import asyncio, sys, time, os, tempfile, pathlib, multiprocessing, logging
from raftmq.cluster import RaftNode, RaftConfig
from raftmq.cluster import journal as J, node as N, group_commit as G
from tests.cluster.raft_fixtures import ListMachine, free_ports
import pysyncobj.tcp_connection as T

def node_main(idx, ports, base, fsync, q):
    sys.setswitchinterval(0.0005)
    marks = []
    if idx == 0:
        orig_add = J.DurableJournal.add
        def add(self, c, i, t):
            marks.append(("add", time.perf_counter())); orig_add(self, c, i, t); marks.append(("added", time.perf_counter()))
        J.DurableJournal.add = add
        orig_send = T.TcpConnection.send
        def send(self, m):
            if isinstance(m, dict): marks.append(("send:"+m.get("type",""), time.perf_counter()))
            orig_send(self, m)
        T.TcpConnection.send = send
        orig_apply = N.RaftNode._apply_entry
        def ap(self, e, i):
            marks.append(("apply", time.perf_counter())); return orig_apply(self, e, i)
        N.RaftNode._apply_entry = ap
        orig_settle = G.GroupCommitter._settle
        def st(self, *a):
            marks.append(("settle", time.perf_counter())); return orig_settle(self, *a)
        G.GroupCommitter._settle = st
    async def run():
        addrs = {f"n{i}": f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        nid = f"n{idx}"
        cfg = RaftConfig(node_id=nid, bind_address=addrs[nid], advertise_address=addrs[nid],
                         peers={k: v for k, v in addrs.items() if k != nid}, data_dir=pathlib.Path(base)/nid, secret="x", fsync=fsync)
        n = RaftNode(cfg, ListMachine()); await n.start()
        if idx == 0:
            while not n.is_leader: await asyncio.sleep(0.01)
            await asyncio.sleep(1)
            for i in range(5):
                marks.clear()
                t0=time.perf_counter(); await n.propose(b"x"*100); t1 = time.perf_counter()
                q.put([(k, round((v-t0)*1e3,3)) for k,v in marks] + [("done", round((t1-t0)*1e3,3))])
                await asyncio.sleep(0.2)
            q.put("done")
        await asyncio.sleep(3600)
    asyncio.run(run())

if __name__ == "__main__":
    fsync = sys.argv[1]
    ports = free_ports(3); base = tempfile.mkdtemp()
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=node_main, args=(i, ports, base, fsync, q)) for i in (1,2,0)]
    for p in procs: p.start()
    while True:
        m = q.get(timeout=60)
        if m == "done": break
        print(fsync, m)
    for p in procs: p.kill()
