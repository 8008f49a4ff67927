import asyncio, subprocess, sys, time, aiohttp, os
from bench.launcher import BenchCluster
from bench import broker_bench as bb
async def main():
    c = BenchCluster(fsync=sys.argv[1] if len(sys.argv)>1 else "always"); c.start()
    try:
        async with aiohttp.ClientSession() as s:
            leader = await c.wait_leader(s)
            follower = next(n for n in c.nodes if n is not leader)
            await bb.setup_queue(s, leader.http_url)
            await asyncio.sleep(1)
            payload = bb.publish_payload(1)
            for name, url in (("leader", leader.http_url), ("follower", follower.http_url)):
                lat=[]
                for i in range(300):
                    t=time.perf_counter(); st,_ = await bb.post(s, url+"/v1/publish", payload); lat.append(time.perf_counter()-t)
                lat.sort(); print(name, "sequential p50 %.2f p90 %.2f p99 %.2f ms" % (lat[150]*1e3, lat[270]*1e3, lat[297]*1e3))
            lat=[]
            for i in range(300):
                t=time.perf_counter()
                async with s.get(leader.http_url+"/healthz") as r: await r.read()
                lat.append(time.perf_counter()-t)
            lat.sort(); print("healthz p50 %.2f ms" % (lat[150]*1e3))
            pids = [n.process.pid for n in c.nodes]
            top = subprocess.Popen(["top", "-b", "-d", "2", "-n", "2", "-H", "-p", ",".join(map(str,pids+[os.getpid()]))], stdout=subprocess.PIPE, text=True)
            r = await bb.publish_throughput(s, leader.http_url, 4, 64, 1)
            print("single 64 inflight", r)
            out = top.communicate()[0]
            print(out.split("\n\n")[-1][:3000] if out else "")
    finally:
        c.stop()
asyncio.run(main())
