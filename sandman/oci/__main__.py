from sandman.oci.main import entry

entry()
