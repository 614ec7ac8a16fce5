"""The migration engine: per project, recover what a killed run left, plan (pure, from the rows
and a look at the disk), execute the plan, write the metadata in batches; plus worker
processes, the read-ahead process, the run lock and coordination across hosts."""
