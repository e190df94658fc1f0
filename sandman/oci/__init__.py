"""sandman-oci: the OCI runtime command line (runc's) over sandman's own kernel layer, for
Podman (conmon), containerd's runc shim and, through them, Kubernetes. See main.py."""
