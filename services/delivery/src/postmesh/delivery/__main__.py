from postmesh.common.service import main
from postmesh.delivery.app import DeliveryService
from postmesh.delivery.settings import DeliverySettings

if __name__ == "__main__":
    main(DeliverySettings, DeliveryService, "delivery")
