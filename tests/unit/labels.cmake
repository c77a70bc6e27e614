# Labels for tests that start threads: the thread-sanitizer build
# (`make sanitize`, `make test`) runs the tests labelled "threads".
# Add a line per such test: set_tests_properties(test_x PROPERTIES LABELS threads)
set_tests_properties(test_export PROPERTIES LABELS threads)
set_tests_properties(test_probe_threads PROPERTIES LABELS threads)
set_tests_properties(test_watch_live PROPERTIES LABELS threads)
set_tests_properties(test_pool_threads PROPERTIES LABELS threads)
set_tests_properties(test_residency PROPERTIES LABELS threads)
set_tests_properties(test_broker PROPERTIES LABELS threads)
set_tests_properties(test_export_attack PROPERTIES LABELS threads)
set_tests_properties(test_pool_reclaim PROPERTIES LABELS threads)
