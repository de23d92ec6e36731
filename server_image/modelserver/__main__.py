import sys


def main() -> None:
    sys.exit("modelserver: not implemented yet (see the inference server issue)")


if __name__ == "__main__":
    main()
