import asyncio, sys, time, os, tempfile, pathlib, multiprocessing, logging
from raftmq.cluster import RaftNode, RaftConfig
from tests.cluster.raft_fixtures import ListMachine, free_ports

def node_main(idx, ports, base, fsync, mode, q):
    logging.basicConfig(level=logging.WARNING)
    sys.setswitchinterval(float(os.environ.get("SWI", "0.005")))
    async def run():
        addrs = {f"n{i}": f"127.0.0.1:{p}" for i, p in enumerate(ports)}
        nid = f"n{idx}"
        cfg = RaftConfig(node_id=nid, bind_address=addrs[nid], advertise_address=addrs[nid],
                         peers={k: v for k, v in addrs.items() if k != nid}, data_dir=pathlib.Path(base)/nid, secret="x", fsync=fsync)
        n = RaftNode(cfg, ListMachine()); await n.start()
        if idx == 0:
            while not n.is_leader: await asyncio.sleep(0.01)
            await asyncio.sleep(1)
            lat=[]
            for i in range(500):
                t=time.perf_counter(); await n.propose(b"x"*100); lat.append(time.perf_counter()-t)
            lat.sort(); q.put(("sync", lat[250]*1e3, lat[450]*1e3, lat[495]*1e3))
            t=time.perf_counter()
            await asyncio.gather(*(n.propose(b"y"*1024) for i in range(20000)))
            q.put(("pipelined 1KB cmds/s", 20000/(time.perf_counter()-t)))
            q.put("done")
        await asyncio.sleep(3600)
    asyncio.run(run())

if __name__ == "__main__":
    fsync = sys.argv[1]
    ports = free_ports(3); base = tempfile.mkdtemp()
    q = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=node_main, args=(i, ports, base, fsync, None, q)) for i in (1,2,0)]
    for p in procs: p.start()
    while True:
        m = q.get(timeout=120)
        if m == "done": break
        print(fsync, m)
    for p in procs: p.kill()
