module modeldeploy.local/loadgen

go 1.26.0
