import sys


def main() -> None:
    sys.exit("modeldeploy-operator: not implemented yet (see the operator issue)")


if __name__ == "__main__":
    main()
