// Process bookkeeping from /proc (Linux): process trees, CPU time, resident memory.
// A server launched through a wrapper (the tsx CLI starts a second node process) is
// measured as its whole process tree, and the listening process is reported apart.

import { execFileSync } from "node:child_process";
import fs from "node:fs";

let clkTck = 100;
try {
  clkTck = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
} catch {
  /* keep the Linux default */
}
export const CLK_TCK = clkTck;

/** Fields of /proc/<pid>/stat after the parenthesised command name (which may contain spaces). */
function statFields(pid: number): string[] | null {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, "latin1");
    return s.slice(s.lastIndexOf(")") + 2).split(" ");
  } catch {
    return null;
  }
}

/** `pid` and all of its live descendants. */
export function processTree(pid: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(Number(name));
    if (!f) continue;
    const ppid = Number(f[1]); // field 4 of stat = index 1 after the name
    const list = children.get(ppid);
    if (list) list.push(Number(name));
    else children.set(ppid, [Number(name)]);
  }
  const out: number[] = [];
  const stack = [pid];
  while (stack.length) {
    const p = stack.pop()!;
    if (!fs.existsSync(`/proc/${p}`)) continue;
    out.push(p);
    for (const c of children.get(p) ?? []) stack.push(c);
  }
  return out;
}

/** utime + stime (all threads) of one process, in clock ticks; 0 if it is gone. */
export function cpuTicks(pid: number): number {
  const f = statFields(pid);
  if (!f) return 0;
  return Number(f[11]) + Number(f[12]); // utime = stat field 14, stime = field 15
}

export function treeCpuSeconds(pids: number[]): number {
  let t = 0;
  for (const p of pids) t += cpuTicks(p);
  return t / CLK_TCK;
}

function statusKb(pid: number, key: string): number {
  try {
    const s = fs.readFileSync(`/proc/${pid}/status`, "latin1");
    const m = new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(s);
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

export const rssKb = (pid: number) => statusKb(pid, "VmRSS");
export const hwmKb = (pid: number) => statusKb(pid, "VmHWM");

/** The process of the tree that has a listening TCP socket on `port` (falls back to the root). */
export function listeningPid(pids: number[], port: number): number {
  const hexPort = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = fs.readFileSync(file, "latin1");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      // local_address is ADDR:PORT, state 0A = LISTEN, inode is column 9
      if (cols[1].endsWith(`:${hexPort}`) && cols[3] === "0A") inodes.add(cols[9]);
    }
  }
  if (inodes.size) {
    for (const pid of pids) {
      let fds: string[] = [];
      try {
        fds = fs.readdirSync(`/proc/${pid}/fd`);
      } catch {
        continue;
      }
      for (const fd of fds) {
        try {
          const link = fs.readlinkSync(`/proc/${pid}/fd/${fd}`);
          const m = /^socket:\[(\d+)\]$/.exec(link);
          if (m && inodes.has(m[1])) return pid;
        } catch {
          /* fd closed meanwhile */
        }
      }
    }
  }
  return pids[0];
}

/** Machine-wide busy and total CPU time from /proc/stat, in seconds summed over all CPUs. */
export function machineCpuSeconds(): { busy: number; total: number } {
  // "cpu  user nice system idle iowait irq softirq steal ..."
  const line = fs.readFileSync("/proc/stat", "latin1").split("\n")[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = v[3] + (v[4] ?? 0);
  return { busy: (total - idle) / CLK_TCK, total: total / CLK_TCK };
}
