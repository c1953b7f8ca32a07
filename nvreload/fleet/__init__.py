"""Rolling a reload across a fleet (packaging/ansible/): Ansible owns the fleet policy (which nodes,
in which batches, when to halt); this package does the typed work on both ends of it, run by the
role as `nvreload-fleet SUBCOMMAND`:

- on each node: `facts` (the node's status, its state in Slurm) and `reload` (one node's reload
  through nvreload itself, verified, a failed node left drained with nvreload's reason);
- on the controller: `plan` (who needs a reload, who is blocked, who is out already; the refusal
  when too many would be out at once), `gate` (halt after a failed batch) and `report` (the per-node
  results merged into fleet-report.json and a table).

It sits above every other layer: it runs nvreload as an operator would (a subprocess) and reads
its JSON documents, whose contract is the schemas in nvreload/schema/.
"""
