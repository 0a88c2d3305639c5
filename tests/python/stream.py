"""The official Python client's stream() exec and portforward against a kins cluster.

Usage: stream.py KUBECONFIG EXEC_POD WEB_POD. Prints one line per check; exits non-zero
(with the reason) on the first that fails.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def check(what, ok, detail=""):
    if not ok:
        sys.exit(f"FAIL {what}: {detail}")
    print(f"ok {what}")


def http_get(pf, port):
    sock = pf.socket(port)
    sock.setblocking(True)
    sock.settimeout(20)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    sock.close()
    return data.decode(errors="replace")


def main():
    kubeconfig, exec_pod, web_pod = sys.argv[1:4]
    config.load_kube_config(config_file=kubeconfig)
    api = client.CoreV1Api()

    # exec: stdout and stderr (the simple form returns them together).
    out = stream(api.connect_get_namespaced_pod_exec, exec_pod, "default",
                 command=["sh", "-c", "echo from-stdout; echo from-stderr >&2"],
                 stderr=True, stdin=False, stdout=True, tty=False)
    check("exec output", "from-stdout" in out and "from-stderr" in out, repr(out))

    # exec with stdin written and the exit code read back.
    resp = stream(api.connect_get_namespaced_pod_exec, exec_pod, "default",
                  command=["sh", "-c", "read line; echo got $line; exit 7"],
                  stderr=True, stdin=True, stdout=True, tty=False,
                  _preload_content=False)
    resp.write_stdin("python\n")
    resp.run_forever(timeout=30)
    got = resp.read_stdout()
    check("exec stdin", "got python" in got, repr(got))
    check("exec exit code", resp.returncode == 7, repr(resp.returncode))
    resp.close()

    # port-forward: two ports, one answered by nginx, one where nothing listens; the
    # refused one reports its error and the other keeps serving.
    pf = portforward(api.connect_get_namespaced_pod_portforward, web_pod, "default",
                     ports="80,81")
    page = http_get(pf, 80)
    check("port-forward 80", "Welcome to nginx!" in page, page[:200])
    sock81 = pf.socket(81)
    sock81.setblocking(True)
    sock81.settimeout(20)
    try:
        sock81.recv(1)
    except OSError:
        pass
    err = pf.error(81)
    check("port-forward 81 refused", err is not None and "connection refused" in err, repr(err))
    check("port-forward 80 error-free", pf.error(80) is None, repr(pf.error(80)))
    pf.close()

    # And a fresh forward still works (the refusal ended only that connection).
    pf = portforward(api.connect_get_namespaced_pod_portforward, web_pod, "default", ports="80")
    page = http_get(pf, 80)
    check("port-forward again", "Welcome to nginx!" in page, page[:200])
    pf.close()


if __name__ == "__main__":
    main()
