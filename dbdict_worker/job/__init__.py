"""One job, start to end, with no database: the child process, its workdir, its sync."""
